#include "util/uuid.h"

#include <uuid/uuid.h>

namespace engine {

Uuid generate_uuid()
{
    Uuid uuid;
    uuid_generate(uuid.data());
    return uuid;
}

std::string uuid_to_string(const Uuid &uuid)
{
    char text[37];
    uuid_unparse_lower(uuid.data(), text);
    return text;
}

} // namespace engine
