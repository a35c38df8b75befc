#include "upstream/backup.h"

#include "nbd/connection.h"
#include "upstream/disk_copy.h"
#include "util/error.h"
#include "util/fd.h"
#include "util/uuid.h"
#include "vma/writer.h"

#include <fcntl.h>

#include <ctime>

namespace engine::upstream {

namespace {

std::string read_config_file(const std::string &path)
{
    Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd)
        throw_errno("unable to open config file '" + path + "'");
    std::string text;
    char buf[65536];
    for (;;) {
        std::size_t got = read_full(fd.get(), buf, sizeof buf, ("unable to read config file '" + path + "'").c_str());
        text.append(buf, got);
        if (got < sizeof buf)
            return text;
    }
}

// Freezes around the switch only: thaw runs whatever the switch did.
void take_snapshot_frozen(Snapshot &snapshot, const BackupHooks &hooks)
{
    bool frozen = hooks.freeze ? hooks.freeze() : false;
    try {
        snapshot.take();
    } catch (...) {
        if (frozen)
            hooks.thaw();
        throw;
    }
    if (frozen)
        hooks.thaw();
}

// Streams the exported snapshot into the archive with the status loop's
// progress lines; the NBD connections are closed when it returns.
BackupResult copy_snapshot(const Snapshot &snapshot, const BackupOptions &options, const BackupHooks &hooks)
{
    vma::Writer writer(options.output_fd);
    for (const std::string &path : options.config_files)
        writer.add_config(path, read_config_file(path));
    std::vector<DiskSource> sources;
    for (const Snapshot::Disk &disk : snapshot.disks()) {
        DiskSource source;
        source.device = writer.add_device(disk.device, disk.size);
        source.connection = std::make_unique<nbd::Connection>(snapshot.nbd_socket(), disk.export_name);
        sources.push_back(std::move(source));
    }
    DiskCopy copy(writer, options.output_fd, std::move(sources), options.bytes_per_second);

    const std::string uuid = uuid_to_string(writer.uuid());
    if (hooks.started)
        hooks.started(uuid);

    bool done = false;
    backup::StatusLoopEnv env;
    env.query_backup = [&] {
        backup::BackupStatus status;
        status.status = done ? "done" : "active";
        status.uuid = uuid;
        status.total = static_cast<int64_t>(writer.total_size());
        status.transferred = static_cast<int64_t>(writer.total_transferred());
        status.zero_bytes = static_cast<int64_t>(writer.total_zero_bytes());
        return status;
    };
    env.query_bitmap_info = [] { return std::vector<backup::BitmapInfo>{}; };
    env.log = hooks.log;
    env.now = [] { return static_cast<int64_t>(time(nullptr)); };
    // the loop's one-second pause is a second of copying
    env.sleep_second = [&] {
        auto deadline = RateLimit::Clock::now() + std::chrono::seconds(1);
        if (copy.run_until(deadline, hooks.interrupted)) {
            writer.finish();
            done = true;
            return;
        }
        if (hooks.interrupted && hooks.interrupted())
            throw backup::Interrupted();
    };
    backup::StatusLoopOptions loop_options;
    loop_options.job_uuid = uuid;
    backup::run_status_loop(loop_options, env);

    return BackupResult{writer.total_size(), writer.total_zero_bytes(), copy.bytes_read()};
}

} // namespace

BackupResult run_backup(const BackupOptions &options, const BackupHooks &hooks)
{
    Snapshot snapshot({options.peer, options.disks, options.work_dir, hooks.log});
    take_snapshot_frozen(snapshot, hooks);
    snapshot.export_over_nbd();
    BackupResult result = copy_snapshot(snapshot, options, hooks);
    snapshot.restore();
    return result;
}

} // namespace engine::upstream
