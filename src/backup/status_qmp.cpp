#include "backup/status_qmp.h"

#include <ctime>

namespace engine::backup {

namespace {

int64_t integer_member(const Json &object, const char *key)
{
    return object.has(key) ? object.member(key).as_integer() : 0;
}

std::string string_member(const Json &object, const char *key)
{
    return object.has(key) && !object.member(key).is_null() ? object.member(key).as_string() : "";
}

} // namespace

BackupStatus parse_backup_status(const Json &reply)
{
    BackupStatus status;
    if (!reply.is_object())
        return status;
    status.status = string_member(reply, "status");
    status.errmsg = string_member(reply, "errmsg");
    status.uuid = string_member(reply, "uuid");
    status.total = integer_member(reply, "total");
    status.has_dirty = reply.has("dirty") && !reply.member("dirty").is_null();
    status.dirty = integer_member(reply, "dirty");
    status.transferred = integer_member(reply, "transferred");
    status.zero_bytes = integer_member(reply, "zero-bytes");
    status.reused = integer_member(reply, "reused");
    status.finishing = reply.has("finishing") && reply.member("finishing").as_boolean();
    return status;
}

std::vector<BitmapInfo> parse_bitmap_info(const Json &reply)
{
    std::vector<BitmapInfo> bitmaps;
    if (!reply.is_array())
        return bitmaps;
    for (size_t i = 0; i < reply.size(); ++i) {
        const Json entry = reply.at(i);
        bitmaps.push_back({string_member(entry, "drive"), string_member(entry, "action"), integer_member(entry, "size"),
                           integer_member(entry, "dirty")});
    }
    return bitmaps;
}

StatusLoopResult run_status_loop_over_qmp(const qmp::Peer &peer, const StatusLoopOptions &options,
                                          const QmpStatusLoopHooks &hooks)
{
    StatusLoopEnv env;
    env.query_backup = [&] {
        hooks.before_command();
        return parse_backup_status(qmp::command(peer, "query-backup", Json::object()));
    };
    env.query_bitmap_info = [&] {
        hooks.before_command();
        return parse_bitmap_info(qmp::command(peer, "query-pbs-bitmap-info", Json::object()));
    };
    env.log = hooks.log;
    env.now = [] { return static_cast<int64_t>(std::time(nullptr)); };
    env.sleep_second = [&] { sleep_unless_interrupted(1.0, hooks.interrupted); };
    return run_status_loop(options, env);
}

} // namespace engine::backup
