#include "schema.h"

#include "qmp_error.h"

namespace pve_sim {

namespace {

bool fits(const engine::Json &value, Type type)
{
    switch (type) {
    case Type::string:
        return value.type() == json_type_string;
    case Type::integer:
        return value.type() == json_type_int;
    case Type::boolean:
        return value.type() == json_type_boolean;
    case Type::object:
        return value.type() == json_type_object;
    case Type::array:
        return value.type() == json_type_array;
    case Type::any:
        return true;
    }
    return false;
}

const char *type_name(Type type)
{
    switch (type) {
    case Type::string:
        return "string";
    case Type::integer:
        return "integer";
    case Type::boolean:
        return "boolean";
    case Type::object:
        return "object";
    case Type::array:
        return "array";
    case Type::any:
        return "any";
    }
    return "?";
}

} // namespace

void check_arguments(const engine::Json &arguments, const std::vector<Parameter> &parameters)
{
    if (!arguments.is_null() && !arguments.is_object())
        throw QmpError("QMP input member 'arguments' must be an object");
    if (arguments.is_object()) {
        json_object_object_foreach(arguments.get(), key, value)
        {
            const Parameter *known = nullptr;
            for (const Parameter &parameter : parameters) {
                if (parameter.name == key)
                    known = &parameter;
            }
            if (!known)
                throw QmpError(std::string("Parameter '") + key + "' is unexpected");
            if (!fits(engine::Json::borrow(value), known->type)) {
                throw QmpError(std::string("Invalid parameter type for '") + key +
                               "', expected: " + type_name(known->type));
            }
        }
    }
    for (const Parameter &parameter : parameters) {
        if (parameter.required && !arguments.has(parameter.name.c_str()))
            throw QmpError("Parameter '" + parameter.name + "' is missing");
    }
}

std::string string_arg(const engine::Json &arguments, const char *name, const std::string &fallback)
{
    return arguments.has(name) ? arguments.member(name).as_string() : fallback;
}

int64_t integer_arg(const engine::Json &arguments, const char *name, int64_t fallback)
{
    return arguments.has(name) ? arguments.member(name).as_integer() : fallback;
}

bool boolean_arg(const engine::Json &arguments, const char *name, bool fallback)
{
    return arguments.has(name) ? arguments.member(name).as_boolean() : fallback;
}

} // namespace pve_sim
