#include "qmp/timeouts.h"

#include <array>

namespace engine::qmp {

std::chrono::milliseconds default_timeout(std::string_view command)
{
    using std::chrono::seconds;

    static constexpr std::array<std::string_view, 13> ten_minutes = {
        "backup-cancel",      "blockdev-snapshot-internal-sync", "blockdev-snapshot-delete-internal-sync",
        "block-job-cancel",   "block-job-complete",              "drive-mirror",
        "guest-fstrim",       "guest-shutdown",                  "query-backup",
        "query-block-jobs",   "query-savevm",                    "savevm-end",
        "savevm-start",
    };

    if (command == "query-migrate" || command == "guest-fsfreeze-freeze")
        return seconds(3600);
    if (command.starts_with("eject") || command.starts_with("change"))
        return seconds(60);
    if (command == "guest-fsfreeze-thaw")
        return seconds(180);
    for (std::string_view name : ten_minutes) {
        if (command == name)
            return seconds(600);
    }
    return seconds(5);
}

} // namespace engine::qmp
