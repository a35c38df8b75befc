#include "util/json.h"

#include <cstdint>
#include <new>

namespace engine {

namespace {

// json-c returns null when an allocation fails; a null here would silently
// become JSON null, so fail loudly instead.
json_object *checked(json_object *created)
{
    if (!created)
        throw std::bad_alloc();
    return created;
}

} // namespace

Json Json::borrow(json_object *object)
{
    return Json(json_object_get(object));
}

Json Json::object()
{
    return Json(checked(json_object_new_object()));
}

Json Json::array()
{
    return Json(checked(json_object_new_array()));
}

Json Json::string(std::string_view text)
{
    return Json(checked(json_object_new_string_len(text.data(), static_cast<int>(text.size()))));
}

Json Json::integer(int64_t value)
{
    return Json(checked(json_object_new_int64(value)));
}

Json Json::number(double value)
{
    return Json(checked(json_object_new_double(value)));
}

Json Json::boolean(bool value)
{
    return Json(checked(json_object_new_boolean(value)));
}

Json Json::parse(std::string_view text)
{
    if (text.size() > static_cast<size_t>(INT32_MAX))
        throw JsonError("JSON text too large");
    json_tokener *tokener = json_tokener_new_ex(JSON_TOKENER_DEFAULT_DEPTH);
    if (!tokener)
        throw std::bad_alloc();
    json_tokener_set_flags(tokener, JSON_TOKENER_STRICT);
    json_object *parsed = json_tokener_parse_ex(tokener, text.data(), static_cast<int>(text.size()));
    json_tokener_error status = json_tokener_get_error(tokener);
    size_t consumed = json_tokener_get_parse_end(tokener);
    json_tokener_free(tokener);

    Json value(parsed);
    if (status == json_tokener_continue)
        throw JsonError("unexpected end of JSON text");
    if (status != json_tokener_success)
        throw JsonError(json_tokener_error_desc(status));
    for (size_t i = consumed; i < text.size(); i++) {
        if (text[i] != ' ' && text[i] != '\t' && text[i] != '\r' && text[i] != '\n')
            throw JsonError("garbage after JSON text");
    }
    return value;
}

bool Json::has(const char *key) const
{
    return is_object() && json_object_object_get_ex(object_, key, nullptr);
}

Json Json::member(const char *key) const
{
    json_object *value = nullptr;
    if (!is_object() || !json_object_object_get_ex(object_, key, &value))
        return Json();
    return borrow(value);
}

Json &Json::set(const char *key, Json value)
{
    if (!is_object())
        throw std::logic_error("Json::set on a non-object");
    if (json_object_object_add(object_, key, value.object_) != 0)
        throw std::bad_alloc();
    value.object_ = nullptr; // the object now owns that reference
    return *this;
}

void Json::remove(const char *key)
{
    if (is_object())
        json_object_object_del(object_, key);
}

size_t Json::size() const
{
    return is_array() ? json_object_array_length(object_) : 0;
}

Json Json::at(size_t index) const
{
    if (!is_array() || index >= json_object_array_length(object_))
        return Json();
    return borrow(json_object_array_get_idx(object_, index));
}

Json &Json::append(Json value)
{
    if (!is_array())
        throw std::logic_error("Json::append on a non-array");
    if (json_object_array_add(object_, value.object_) != 0)
        throw std::bad_alloc();
    value.object_ = nullptr;
    return *this;
}

std::string Json::as_string() const
{
    if (is_string())
        return std::string(json_object_get_string(object_), json_object_get_string_len(object_));
    return text();
}

int64_t Json::as_integer() const
{
    return json_object_get_int64(object_);
}

double Json::as_number() const
{
    return json_object_get_double(object_);
}

bool Json::as_boolean() const
{
    return json_object_get_boolean(object_);
}

std::string Json::text() const
{
    size_t length = 0;
    const char *text = json_object_to_json_string_length(
        object_, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &length);
    return std::string(text, length);
}

} // namespace engine
