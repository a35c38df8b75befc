#include "agent.h"

#include "qmp_error.h"
#include "schema.h"

namespace pve_sim {

using engine::Json;

Json GuestAgent::run(const std::string &execute, const Json &arguments)
{
    if (execute == "guest-sync-delimited" || execute == "guest-sync") {
        check_arguments(arguments, {{"id", Type::integer, true}});
        return arguments.member("id");
    }
    if (execute == "guest-ping") {
        check_arguments(arguments, {});
        return Json::object();
    }
    if (execute == "guest-fsfreeze-status") {
        check_arguments(arguments, {});
        return Json::string(frozen_ ? "frozen" : "thawed");
    }
    if (execute == "guest-fsfreeze-thaw") {
        check_arguments(arguments, {});
        int thawed = frozen_ ? fs_count_ : 0;
        frozen_ = false;
        return Json::integer(thawed);
    }
    if (frozen_) {
        throw QmpError("Command " + execute + " has been disabled: the agent is in frozen state",
                       "CommandNotFound");
    }
    if (execute == "guest-fsfreeze-freeze") {
        check_arguments(arguments, {});
        frozen_ = fs_count_ > 0;
        return Json::integer(fs_count_);
    }
    throw QmpError("The command " + execute + " has not been found", "CommandNotFound");
}

} // namespace pve_sim
