#include "qmp/client.h"

#include "qmp/error.h"
#include "qmp/reply_line.h"

#include <unistd.h>

#include <atomic>

namespace engine::qmp {

namespace {

std::atomic<unsigned long> command_counter{0};

} // namespace

std::string next_command_id()
{
    return std::to_string(::getpid()) + ":" + std::to_string(++command_counter);
}

Client::Client(const std::string &socket_path, const std::string &vmid, ClientOptions options)
    : channel_(socket_path, "VM " + vmid + " qmp", std::max(options.timeout, std::chrono::milliseconds(1000))),
      options_(options)
{
    channel_.arm(Clock::now() + options_.timeout);
    execute("qmp_capabilities");
}

Json Client::execute(std::string_view command, const Json &arguments, int fd)
{
    std::string id = next_command_id();
    Json request = Json::object();
    request.set("execute", Json::string(command));
    request.set("arguments", arguments.is_null() ? Json::object() : arguments);
    request.set("id", Json::string(id));
    channel_.send(request.text(), fd);
    return read_reply(id);
}

// Lines are handled as PVE::QMPClient::mux_input does: the greeting is kept
// aside, any error desc fails the queue, events are set aside, anything else
// must carry the current command's id.
Json Client::read_reply(const std::string &id)
{
    size_t scanned = 0;
    for (;;) {
        size_t newline = buffer_.find('\n', scanned);
        if (newline == std::string::npos) {
            scanned = buffer_.size();
            if (buffer_.size() > options_.max_line_bytes) {
                throw Error(Error::Kind::protocol,
                            "QMP reply exceeds " + std::to_string(options_.max_line_bytes) + " bytes\n");
            }
            if (!channel_.receive(buffer_))
                throw Error(Error::Kind::closed, "client closed connection\n");
            continue;
        }
        std::string_view line(buffer_.data(), newline);
        if (!line.empty() && line.back() == '\r')
            line.remove_suffix(1);
        bool blank = line.find_first_not_of(" \t") == std::string_view::npos;
        Json message = blank ? Json() : parse_reply_line(line);
        buffer_.erase(0, newline + 1);
        scanned = 0;
        if (blank)
            continue;

        if (message.has("QMP")) {
            greeting_ = message;
            continue;
        }
        Json desc = message.member("error").member("desc");
        if (!desc.is_null()) {
            std::string text = desc.as_string();
            while (!text.empty() && text.back() == '\n')
                text.pop_back();
            if (text.find("Connection can not be completed immediately") != std::string::npos)
                continue;
            throw Error(Error::Kind::command, text + "\n");
        }
        if (message.has("event")) {
            events_.push_back(message);
            continue;
        }
        Json got = message.member("id");
        std::string got_id = got.is_null() ? "" : got.as_string();
        if (got_id.empty() || got_id == "0")
            throw Error(Error::Kind::protocol, "received response without command id\n");
        if (got_id != id) {
            throw Error(Error::Kind::protocol,
                        "got wrong command id '" + got_id + "' (expected " + id + ")\n");
        }
        return message.member("return");
    }
}

} // namespace engine::qmp
