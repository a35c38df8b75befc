// RAII over json-c: a Json value owns one reference to a json_object, so
// values can be copied, stored and returned without manual get/put.
#pragma once

#include <json-c/json.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace engine {

// Thrown by Json::parse; what() is json-c's description of the problem.
class JsonError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

class Json {
  public:
    // JSON null (json-c represents it as a null pointer).
    Json() = default;
    // Takes over one reference the caller owns (e.g. from json_object_new_*).
    static Json adopt(json_object *owned) { return Json(owned); }
    // Adds a reference to an object someone else owns (e.g. a member).
    static Json borrow(json_object *object);

    static Json object();
    static Json array();
    static Json string(std::string_view text);
    static Json integer(int64_t value);
    static Json number(double value);
    static Json boolean(bool value);

    // Parses exactly one JSON text; throws JsonError on malformed input or
    // trailing garbage.
    static Json parse(std::string_view text);

    Json(const Json &other) : object_(json_object_get(other.object_)) {}
    Json(Json &&other) noexcept : object_(other.object_) { other.object_ = nullptr; }
    Json &operator=(Json other) noexcept
    {
        std::swap(object_, other.object_);
        return *this;
    }
    ~Json() { json_object_put(object_); }

    json_object *get() const { return object_; }
    json_type type() const { return json_object_get_type(object_); }
    bool is_null() const { return object_ == nullptr; }
    bool is_object() const { return type() == json_type_object; }
    bool is_array() const { return type() == json_type_array; }
    bool is_string() const { return type() == json_type_string; }

    // Object access: member() is null when the key is absent or the value
    // is not an object.
    bool has(const char *key) const;
    Json member(const char *key) const;
    Json &set(const char *key, Json value);
    void remove(const char *key);

    // Array access.
    size_t size() const;
    Json at(size_t index) const;
    Json &append(Json value);

    // Scalar conversions with json-c's rules (e.g. a string "12" as integer
    // is 12); as_string() of a non-string is its JSON text.
    std::string as_string() const;
    int64_t as_integer() const;
    double as_number() const;
    bool as_boolean() const;

    // Compact JSON text without escaped slashes, one line.
    std::string text() const;

  private:
    explicit Json(json_object *owned) : object_(owned) {}
    json_object *object_ = nullptr;
};

} // namespace engine
