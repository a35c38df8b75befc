#include "qmp/agent.h"

#include "qmp/error.h"
#include "qmp/reply_line.h"

#include <unistd.h>

#include <atomic>
#include <vector>

namespace engine::qmp {

namespace {

std::atomic<unsigned long> sync_counter{0};

// The lines after the last 0xFF sentinel, each without its line ending, as
// PVE's /\xff([^\n]+})\r?\n([^\n]+})\r?\n/ finds them. Only lines ending in
// '}' count; `wanted` complete lines or fewer are returned.
std::vector<std::string_view> lines_after_sentinel(const std::string &buffer, size_t wanted, size_t &end)
{
    std::vector<std::string_view> lines;
    size_t sentinel = buffer.rfind('\xff');
    if (sentinel == std::string::npos)
        return lines;
    size_t start = sentinel + 1;
    while (lines.size() < wanted) {
        size_t newline = buffer.find('\n', start);
        if (newline == std::string::npos)
            break;
        std::string_view line(buffer.data() + start, newline - start);
        if (!line.empty() && line.back() == '\r')
            line.remove_suffix(1);
        if (line.empty() || line.back() != '}')
            break;
        lines.push_back(line);
        start = newline + 1;
        end = start;
    }
    return lines;
}

} // namespace

long long next_agent_sync_id()
{
    return std::stoll(std::to_string(::getpid()) + "0" + std::to_string(++sync_counter));
}

AgentClient::AgentClient(const std::string &socket_path, const std::string &vmid, std::chrono::milliseconds timeout,
                         size_t max_line_bytes)
    : channel_(socket_path, "VM " + vmid + " qga", std::max(timeout, std::chrono::milliseconds(1000))),
      max_line_bytes_(max_line_bytes)
{
    channel_.arm(Clock::now() + timeout);
}

std::optional<Json> AgentClient::execute(std::string_view command, const Json &arguments)
{
    if (closed_)
        throw Error(Error::Kind::closed, "Got EOF but command queue is not empty.\n");

    long long id = next_agent_sync_id();
    Json sync_arguments = Json::object();
    sync_arguments.set("id", Json::integer(id));
    Json sync = Json::object();
    sync.set("execute", Json::string("guest-sync-delimited"));
    sync.set("arguments", sync_arguments);
    Json request = Json::object();
    request.set("execute", Json::string(command));
    request.set("arguments", arguments.is_null() ? Json::object() : arguments);
    channel_.send(sync.text() + "\n" + request.text() + "\n");

    for (;;) {
        size_t end = 0;
        std::vector<std::string_view> lines = lines_after_sentinel(buffer_, 2, end);
        if (lines.size() == 2) {
            Json sync_reply = parse_reply_line(lines[0]);
            Json reply = parse_reply_line(lines[1]);
            buffer_.erase(0, end);
            Json got = sync_reply.member("return");
            if (got.is_null() || got.as_integer() == 0)
                throw Error(Error::Kind::protocol, "received response without command id\n");
            if (got.as_integer() < id)
                continue; // a reply meant for an earlier client
            if (got.as_integer() != id) {
                throw Error(Error::Kind::protocol, "got wrong command id '" + got.as_string() + "' (expected " +
                                                       std::to_string(id) + ")\n");
            }
            return reply;
        }
        if (buffer_.size() > max_line_bytes_) {
            throw Error(Error::Kind::protocol,
                        "agent reply exceeds " + std::to_string(max_line_bytes_) + " bytes\n");
        }
        if (channel_.receive(buffer_))
            continue;

        // EOF: fine once the agent acknowledged the sync (it may shut down).
        closed_ = true;
        lines = lines_after_sentinel(buffer_, 1, end);
        if (lines.empty())
            throw Error(Error::Kind::closed, "client closed connection\n");
        Json got = parse_reply_line(lines[0]).member("return");
        if (got.is_null() || got.as_integer() == 0)
            throw Error(Error::Kind::protocol, "received response without command id\n");
        return std::nullopt;
    }
}

} // namespace engine::qmp
