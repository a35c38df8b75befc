// PVE::QMPClient::cmd's per-command default timeouts (qemu-server 8.3), used
// when a caller passes no timeout of its own.
#pragma once

#include <chrono>
#include <string_view>

namespace engine::qmp {

// 3600 s for query-migrate and guest-fsfreeze-freeze, 60 s for names
// starting with "eject" or "change", 180 s for guest-fsfreeze-thaw, 600 s
// for the long-running block/backup/savevm commands (backup-cancel,
// query-backup, query-block-jobs, drive-mirror, guest-shutdown, ...), and
// 5 s for everything else (backup, getfd, cont, query-status, ...).
std::chrono::milliseconds default_timeout(std::string_view command);

// PVE::QMPClient::queue_execute's default for a batch: 3 s.
inline constexpr std::chrono::milliseconds batch_default_timeout{3000};

} // namespace engine::qmp
