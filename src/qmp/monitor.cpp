#include "qmp/monitor.h"

#include "qmp/agent.h"
#include "qmp/client.h"
#include "qmp/error.h"
#include "qmp/timeouts.h"

#include <deque>

namespace engine::qmp {

namespace {

std::chrono::milliseconds or_default(std::chrono::milliseconds timeout, std::chrono::milliseconds fallback)
{
    return timeout.count() > 0 ? timeout : fallback;
}

bool carries_fd(const std::string &execute)
{
    return execute == "getfd" || execute == "add-fd";
}

} // namespace

Json command(const Peer &peer, const std::string &execute, const Json &arguments, std::chrono::milliseconds timeout)
{
    try {
        Client client(peer.socket_path, peer.vmid, {.timeout = or_default(timeout, default_timeout(execute))});
        return client.execute(execute, arguments);
    } catch (const Error &e) {
        throw CommandFailed(peer.vmid, execute, e);
    }
}

std::string human_monitor_command(const Peer &peer, const std::string &command_line,
                                  std::chrono::milliseconds timeout)
{
    Json arguments = Json::object();
    arguments.set("command-line", Json::string(command_line));
    return command(peer, "human-monitor-command", arguments, timeout).as_string();
}

std::vector<Json> batch(const Peer &peer, const std::vector<BatchCommand> &commands, int fd,
                        std::chrono::milliseconds timeout)
{
    std::vector<Json> results;
    if (commands.empty())
        return results; // PVE opens no connection for an empty queue
    Client client(peer.socket_path, peer.vmid, {.timeout = or_default(timeout, batch_default_timeout)});
    std::deque<BatchCommand> queue(commands.begin(), commands.end());
    while (!queue.empty()) {
        BatchCommand each = std::move(queue.front());
        queue.pop_front();
        results.push_back(client.execute(each.execute, each.arguments, carries_fd(each.execute) ? fd : -1));
        if (each.on_reply)
            for (BatchCommand &next : each.on_reply(results.back()))
                queue.push_back(std::move(next));
    }
    return results;
}

Json agent_command(const Peer &agent, const std::string &execute, const Json &arguments,
                   std::chrono::milliseconds timeout)
{
    try {
        AgentClient client(agent.socket_path, agent.vmid, or_default(timeout, default_timeout(execute)));
        std::optional<Json> reply = client.execute(execute, arguments);
        if (!reply)
            return Json();
        if (reply->has("return") || !reply->has("error"))
            return reply->member("return");
        Json wrapped = Json::object();
        wrapped.set("error", reply->member("error"));
        return wrapped;
    } catch (const Error &e) {
        throw CommandFailed(agent.vmid, execute, e);
    }
}

} // namespace engine::qmp
