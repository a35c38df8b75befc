// The QMP and guest-agent clients against scripted fake peers: the wire
// format PVE::QMPClient uses, and every failure worded as PVE words it.
#include "qmp/agent.h"
#include "qmp/client.h"
#include "qmp/error.h"
#include "qmp/monitor.h"
#include "qmp/timeouts.h"
#include "qmp_test_support.h"

#include "catch2_compat.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <stdexcept>

using engine::Json;
using namespace engine::qmp;
using namespace std::chrono_literals;
using qmp_test::Connection;
using qmp_test::FakePeer;
using qmp_test::TempDir;
using qmp_test::failure_text;

namespace {

const std::string greeting = R"({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 9}}, "capabilities": []}})"
                             "\r\n";

// The id of a command as sent by the client.
std::string id_of(const std::string &command)
{
    return Json::parse(command).member("id").as_string();
}

std::string reply(const std::string &command, const std::string &value)
{
    return R"({"return": )" + value + R"(, "id": ")" + id_of(command) + "\"}\r\n";
}

// Greeting, then answers qmp_capabilities.
void negotiate(Connection &peer)
{
    peer.write(greeting);
    std::string capabilities = peer.read_command();
    REQUIRE(Json::parse(capabilities).member("execute").as_string() == "qmp_capabilities");
    peer.write(reply(capabilities, "{}"));
}

} // namespace

TEST_CASE("qmp command: capabilities first, PVE's wire format, return value", "[qmp]")
{
    TempDir dir;
    std::string socket = dir.file("100.qmp");
    std::vector<std::string> seen;
    FakePeer peer(socket, [&](Connection &c) {
        c.write(greeting);
        std::string capabilities = c.read_command();
        seen.push_back(capabilities);
        c.write(reply(capabilities, "{}"));
        std::string command = c.read_command();
        seen.push_back(command);
        c.write(reply(command, R"({"status": "prelaunch", "singlestep": false, "running": false})"));
        c.wait_closed();
    });

    Json status = command({socket, "100"}, "query-status", Json::object());
    CHECK(peer.finish() == "");
    CHECK(status.member("status").as_string() == "prelaunch");
    CHECK(status.member("running").type() == json_type_boolean);

    REQUIRE(seen.size() == 2);
    Json capabilities = Json::parse(seen[0]);
    CHECK(capabilities.member("arguments").text() == "{}");
    std::string prefix = std::to_string(::getpid()) + ":";
    CHECK(id_of(seen[0]).starts_with(prefix));
    Json sent = Json::parse(seen[1]);
    CHECK(sent.member("execute").as_string() == "query-status");
    CHECK(sent.member("arguments").text() == "{}");
    // ids count up across the process
    CHECK(std::stoul(id_of(seen[1]).substr(prefix.size())) ==
          std::stoul(id_of(seen[0]).substr(prefix.size())) + 1);
}

TEST_CASE("qmp command: QEMU's error desc becomes PVE's die text", "[qmp]")
{
    TempDir dir;
    std::string socket = dir.file("100.qmp");
    FakePeer peer(socket, [](Connection &c) {
        negotiate(c);
        std::string command = c.read_command();
        c.write(R"({"error": {"class": "GenericError", "desc": "resume failed\n"}, "id": ")" + id_of(command) +
                "\"}\r\n");
        c.wait_closed();
    });
    CHECK(failure_text([&] { command({socket, "100"}, "cont", Json::object()); }) ==
          "VM 100 qmp command 'cont' failed - resume failed\n");
    CHECK(peer.finish() == "");
}

TEST_CASE("qmp command: a peer that never answers times out", "[qmp]")
{
    TempDir dir;
    std::string socket = dir.file("100.qmp");
    FakePeer peer(socket, [](Connection &c) { c.wait_closed(); });
    try {
        command({socket, "100"}, "query-status", Json::object(), 300ms);
        FAIL("no timeout");
    } catch (const CommandFailed &e) {
        CHECK(std::string(e.what()) == "VM 100 qmp command 'query-status' failed - got timeout\n");
        CHECK(e.kind() == Error::Kind::timeout);
    }
    CHECK(peer.finish() == "");
}

TEST_CASE("qmp command: the timeout covers the whole connection", "[qmp]")
{
    TempDir dir;
    std::string socket = dir.file("100.qmp");
    // every step answers within the timeout, but not all of them together
    FakePeer peer(socket, [](Connection &c) {
        c.write(greeting);
        for (int i = 0; i < 3; i++) {
            std::string command = c.read_command();
            std::this_thread::sleep_for(200ms);
            c.write(reply(command, "{}"));
        }
        c.wait_closed();
    });
    CHECK(failure_text([&] {
              batch({socket, "100"}, {{"stop", Json::object()}, {"cont", Json::object()}}, -1, 500ms);
          }) == "got timeout\n");
    CHECK(peer.finish() == "");
}

TEST_CASE("qmp command: a peer closing mid-reply", "[qmp]")
{
    TempDir dir;
    std::string socket = dir.file("100.qmp");
    FakePeer peer(socket, [](Connection &c) {
        negotiate(c);
        c.read_command();
        c.write(R"({"return": {"status": "runn)");
    });
    CHECK(failure_text([&] { command({socket, "100"}, "query-status", Json::object()); }) ==
          "VM 100 qmp command 'query-status' failed - client closed connection\n");
    CHECK(peer.finish() == "");
}

TEST_CASE("qmp command: garbage instead of JSON", "[qmp]")
{
    TempDir dir;
    std::string socket = dir.file("100.qmp");
    FakePeer peer(socket, [](Connection &c) {
        negotiate(c);
        c.read_command();
        c.write("this is not json}\r\n");
        c.wait_closed();
    });
    std::string text = failure_text([&] { command({socket, "100"}, "query-status", Json::object()); });
    CHECK(text.starts_with("VM 100 qmp command 'query-status' failed - malformed JSON string - "));
    CHECK(text.ends_with("(before \"this is not json}\")\n"));
    CHECK(peer.finish() == "");
}

TEST_CASE("qmp command: replies without or with another id", "[qmp]")
{
    TempDir dir;
    std::string socket = dir.file("100.qmp");
    FakePeer peer(
        socket,
        [](Connection &c) {
            negotiate(c);
            c.read_command();
            static int round = 0;
            c.write(round++ == 0 ? "{\"return\": {}}\n" : "{\"return\": {}, \"id\": \"1:999\"}\n");
            c.wait_closed();
        },
        2);
    CHECK(failure_text([&] { command({socket, "100"}, "stop", Json::object()); }) ==
          "VM 100 qmp command 'stop' failed - received response without command id\n");
    std::string text = failure_text([&] { command({socket, "100"}, "stop", Json::object()); });
    CHECK(text.starts_with("VM 100 qmp command 'stop' failed - got wrong command id '1:999' (expected " +
                           std::to_string(::getpid()) + ":"));
    CHECK(peer.finish() == "");
}

TEST_CASE("qmp command: a huge reply arrives whole; a bound stops an endless line", "[qmp]")
{
    TempDir dir;
    std::string socket = dir.file("100.qmp");
    std::string big(8 << 20, 'x');
    for (size_t i = 0; i < big.size(); i += 4096)
        big[i] = static_cast<char>('a' + (i / 4096) % 26);
    FakePeer peer(
        socket,
        [&](Connection &c) {
            negotiate(c);
            std::string command = c.read_command();
            c.write(reply(command, "\"" + big + "\""));
            c.wait_closed();
        },
        2);
    CHECK(command({socket, "100"}, "human-monitor-command", Json::object()).as_string() == big);

    CHECK(failure_text([&] {
              Client client(socket, "100", {.timeout = 5s, .max_line_bytes = 1 << 20});
              client.execute("query-block");
          }) == "QMP reply exceeds 1048576 bytes\n");
    CHECK(peer.finish() == "");
}

TEST_CASE("qmp client: events before the reply are kept in order", "[qmp]")
{
    TempDir dir;
    std::string socket = dir.file("100.qmp");
    FakePeer peer(socket, [](Connection &c) {
        negotiate(c);
        std::string command = c.read_command();
        c.write(R"({"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"})"
                "\r\n"
                R"({"timestamp": {"seconds": 1, "microseconds": 3}, "event": "RESUME"})"
                "\r\n" +
                reply(command, "{}") + R"({"event": "SHUTDOWN", "data": {"reason": "host-qmp-quit"}})" "\r\n");
        std::string second = c.read_command();
        c.write(reply(second, R"({"status": "running"})"));
        c.wait_closed();
    });
    Client client(socket, "100");
    CHECK(client.execute("cont").text() == "{}");
    REQUIRE(client.events().size() == 2);
    CHECK(client.events()[0].member("event").as_string() == "STOP");
    CHECK(client.events()[1].member("event").as_string() == "RESUME");
    CHECK(client.greeting().member("QMP").member("version").member("qemu").member("major").as_integer() == 9);
    CHECK(client.execute("query-status").member("status").as_string() == "running");
    REQUIRE(client.events().size() == 3);
    CHECK(client.events()[2].member("data").member("reason").as_string() == "host-qmp-quit");
}

TEST_CASE("qmp batch: getfd carries the fd, commands run in order on one connection", "[qmp]")
{
    TempDir dir;
    std::string socket = dir.file("100.qmp");
    std::string target = dir.file("backup.vma");
    engine::Fd file(::open(target.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600));
    REQUIRE(file);
    struct stat expected;
    REQUIRE(::fstat(file.get(), &expected) == 0);

    std::vector<std::string> executed;
    bool fd_matches = false, fd_only_with_getfd = true;
    FakePeer peer(socket, [&](Connection &c) {
        negotiate(c);
        for (int i = 0; i < 3; i++) {
            engine::Fd passed;
            std::string command = c.read_command_with_fd(passed);
            std::string execute = Json::parse(command).member("execute").as_string();
            executed.push_back(execute);
            struct stat got;
            if (execute == "getfd")
                fd_matches = passed && ::fstat(passed.get(), &got) == 0 && got.st_ino == expected.st_ino;
            else if (passed)
                fd_only_with_getfd = false;
            c.write(reply(command, execute == "backup" ? R"({"UUID": "0b8d2d1c-0e35-4b4f-a1a0-4c4d4f1f0a11"})"
                                                       : "{}"));
        }
        c.wait_closed();
    });
    Json getfd = Json::object();
    getfd.set("fdname", Json::string("backup"));
    Json backup = Json::object();
    backup.set("backup-file", Json::string("/dev/fdname/backup"));
    std::vector<Json> results =
        batch({socket, "100"}, {{"getfd", getfd}, {"backup", backup}, {"closefd", getfd}}, file.get());
    CHECK(peer.finish() == "");
    REQUIRE(results.size() == 3);
    CHECK(results[1].member("UUID").as_string() == "0b8d2d1c-0e35-4b4f-a1a0-4c4d4f1f0a11");
    CHECK(executed == std::vector<std::string>{"getfd", "backup", "closefd"});
    CHECK(fd_matches);
    CHECK(fd_only_with_getfd);
    CHECK(::fcntl(file.get(), F_GETFD) != -1); // still ours
}

TEST_CASE("qmp batch: a reply's callback runs before the next command and queues more", "[qmp]")
{
    TempDir dir;
    std::string socket = dir.file("100.qmp");
    std::mutex lock;
    std::vector<std::string> events; // what the peer received and what the callbacks saw, in order
    auto note = [&](const std::string &event) {
        std::lock_guard<std::mutex> guard(lock);
        events.push_back(event);
    };
    FakePeer peer(socket, [&](Connection &c) {
        negotiate(c);
        for (int i = 0; i < 3; i++) {
            std::string command = c.read_command();
            std::string execute = Json::parse(command).member("execute").as_string();
            note("peer " + execute);
            c.write(reply(command, execute == "backup" ? R"({"UUID": "u-1"})" : "{}"));
        }
        c.wait_closed();
    });
    BatchCommand getfd{"getfd", Json::object(), [&](const Json &) {
                           note("getfd callback");
                           BatchCommand backup{"backup", Json::object(), [&](const Json &result) {
                                                   note("backup callback " + result.member("UUID").as_string());
                                                   return std::vector<BatchCommand>{};
                                               }};
                           return std::vector<BatchCommand>{backup};
                       }};
    std::vector<Json> results = batch({socket, "100"}, {getfd, {"query-status", Json::object()}}, -1);
    CHECK(peer.finish() == "");
    REQUIRE(results.size() == 3);
    CHECK(results[2].member("UUID").as_string() == "u-1");
    // queued after what was already queued, as a QMPClient callback's queue_cmd
    CHECK(events == std::vector<std::string>{"peer getfd", "getfd callback", "peer query-status", "peer backup",
                                             "backup callback u-1"});
}

TEST_CASE("qmp batch: a callback that throws stops the queue with its text", "[qmp]")
{
    TempDir dir;
    std::string socket = dir.file("100.qmp");
    int commands_seen = 0;
    FakePeer peer(socket, [&](Connection &c) {
        negotiate(c);
        c.write(reply(c.read_command(), "{}"));
        commands_seen++;
        c.wait_closed();
    });
    BatchCommand getfd{"getfd", Json::object(), [](const Json &) -> std::vector<BatchCommand> {
                           throw std::runtime_error("callback died\n");
                       }};
    CHECK(failure_text([&] { batch({socket, "100"}, {getfd, {"backup", Json::object()}}, -1); }) ==
          "callback died\n");
    CHECK(peer.finish() == "");
    CHECK(commands_seen == 1);
}

TEST_CASE("qmp batch: the first error stops the queue with the bare queue text", "[qmp]")
{
    TempDir dir;
    std::string socket = dir.file("100.qmp");
    int commands_seen = 0;
    FakePeer peer(socket, [&](Connection &c) {
        negotiate(c);
        std::string command = c.read_command();
        commands_seen++;
        c.write(R"({"error": {"class": "GenericError", "desc": "No file descriptor supplied via SCM_RIGHTS"}, "id": ")" +
                id_of(command) + "\"}\n");
        c.wait_closed();
    });
    CHECK(failure_text([&] {
              batch({socket, "100"}, {{"getfd", Json::object()}, {"backup", Json::object()}}, -1);
          }) == "No file descriptor supplied via SCM_RIGHTS\n");
    CHECK(peer.finish() == "");
    CHECK(commands_seen == 1);
}

TEST_CASE("qmp connect: PVE's texts for a missing socket and a dead one", "[qmp]")
{
    TempDir dir;
    CHECK(failure_text([&] { command({dir.file("none.qmp"), "100"}, "query-status", Json::object()); }) ==
          "VM 100 qmp command 'query-status' failed - unable to connect to VM 100 qmp socket - No such file or "
          "directory\n");

    // a socket file nobody listens on any more
    std::string stale = dir.file("stale.qmp");
    {
        engine::Fd listener(::socket(AF_UNIX, SOCK_STREAM, 0));
        sockaddr_un address{};
        address.sun_family = AF_UNIX;
        std::strcpy(address.sun_path, stale.c_str());
        REQUIRE(::bind(listener.get(), reinterpret_cast<sockaddr *>(&address), sizeof(address)) == 0);
    }
    CHECK(failure_text([&] { command({stale, "100"}, "query-status", Json::object()); }) ==
          "VM 100 qmp command 'query-status' failed - unable to connect to VM 100 qmp socket - Connection "
          "refused\n");
    CHECK(failure_text([&] { batch({stale, "7"}, {{"stop", Json::object()}}, -1); }) ==
          "unable to connect to VM 7 qmp socket - Connection refused\n");
}

TEST_CASE("qmp timeouts: PVE's default table", "[qmp]")
{
    CHECK(default_timeout("query-migrate") == 3600s);
    CHECK(default_timeout("guest-fsfreeze-freeze") == 3600s);
    CHECK(default_timeout("eject") == 60s);
    CHECK(default_timeout("change-vnc-password") == 60s);
    CHECK(default_timeout("guest-fsfreeze-thaw") == 180s);
    for (const char *name : {"backup-cancel", "query-backup", "block-job-cancel", "drive-mirror", "guest-shutdown",
                             "query-block-jobs", "savevm-start", "savevm-end", "query-savevm", "guest-fstrim",
                             "blockdev-snapshot-internal-sync", "blockdev-snapshot-delete-internal-sync",
                             "block-job-complete"})
        CHECK(default_timeout(name) == 600s);
    for (const char *name : {"backup", "query-proxmox-support", "getfd", "cont", "query-status", "query-block",
                             "human-monitor-command", "block-export-add", "guest-ping", "quit"})
        CHECK(default_timeout(name) == 5s);
}

// --- guest agent ------------------------------------------------------------

namespace {

long long sync_id_of(const std::string &line)
{
    return Json::parse(line).member("arguments").member("id").as_integer();
}

} // namespace

TEST_CASE("qga command: sync handshake, stale sync replies skipped", "[qmp]")
{
    TempDir dir;
    std::string socket = dir.file("100.qga");
    std::string sync_line, command_line;
    FakePeer peer(socket, [&](Connection &c) {
        sync_line = c.read_until("\n");
        command_line = c.read_until("\n");
        long long id = sync_id_of(sync_line);
        // a reply left over from an earlier client, then the real one
        c.write("\xff{\"return\": " + std::to_string(id - 1) + "}\n{\"return\": {\"stale\": 1}}\n");
        c.write("\xff{\"return\": " + std::to_string(id) + "}\n{\"return\": 2}\n");
        c.wait_closed();
    });
    Json frozen = agent_command({socket, "100"}, "guest-fsfreeze-freeze", Json::object());
    CHECK(peer.finish() == "");
    CHECK(frozen.as_integer() == 2);
    CHECK(Json::parse(sync_line).member("execute").as_string() == "guest-sync-delimited");
    std::string id = std::to_string(sync_id_of(sync_line));
    CHECK(id.starts_with(std::to_string(::getpid()) + "0"));
    Json command = Json::parse(command_line);
    CHECK(command.member("execute").as_string() == "guest-fsfreeze-freeze");
    CHECK(command.member("arguments").text() == "{}");
}

TEST_CASE("qga command: agent errors are returned, not thrown", "[qmp]")
{
    TempDir dir;
    std::string socket = dir.file("100.qga");
    FakePeer peer(socket, [](Connection &c) {
        long long id = sync_id_of(c.read_until("\n"));
        c.read_until("\n");
        c.write("\xff{\"return\": " + std::to_string(id) +
                "}\r\n{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"Command guest-fsfreeze-freeze has "
                "been disabled\"}}\r\n");
        c.wait_closed();
    });
    Json result = agent_command({socket, "100"}, "guest-fsfreeze-freeze", Json::object());
    CHECK(peer.finish() == "");
    CHECK(result.member("error").member("class").as_string() == "CommandNotFound");
}

TEST_CASE("qga command: EOF after the sync reply is success; silence is a timeout", "[qmp]")
{
    TempDir dir;
    std::string socket = dir.file("100.qga");
    FakePeer peer(
        socket,
        [](Connection &c) {
            static int round = 0;
            long long id = sync_id_of(c.read_until("\n"));
            c.read_until("\n");
            if (round++ == 0)
                c.write("\xff{\"return\": " + std::to_string(id) + "}\n"); // then shut down
            else
                c.wait_closed();
        },
        2);
    CHECK(agent_command({socket, "100"}, "guest-shutdown", Json::object()).is_null());
    CHECK(failure_text([&] { agent_command({socket, "100"}, "guest-ping", Json::object(), 300ms); }) ==
          "VM 100 qmp command 'guest-ping' failed - got timeout\n");
    CHECK(peer.finish() == "");
    CHECK(failure_text([&] { agent_command({dir.file("none.qga"), "100"}, "guest-ping", Json::object()); }) ==
          "VM 100 qmp command 'guest-ping' failed - unable to connect to VM 100 qga socket - No such file or "
          "directory\n");
}

TEST_CASE("qga command: a wrong sync id and a close before the sync", "[qmp]")
{
    TempDir dir;
    std::string socket = dir.file("100.qga");
    FakePeer peer(
        socket,
        [](Connection &c) {
            static int round = 0;
            long long id = sync_id_of(c.read_until("\n"));
            c.read_until("\n");
            if (round++ == 0)
                c.write("\xff{\"return\": " + std::to_string(id + 5) + "}\n{\"return\": {}}\n");
        },
        2);
    std::string text = failure_text([&] { agent_command({socket, "100"}, "guest-ping", Json::object()); });
    CHECK(text.starts_with("VM 100 qmp command 'guest-ping' failed - got wrong command id '"));
    CHECK(failure_text([&] { agent_command({socket, "100"}, "guest-ping", Json::object()); }) ==
          "VM 100 qmp command 'guest-ping' failed - client closed connection\n");
    CHECK(peer.finish() == "");
}

TEST_CASE("qga client: commands after the agent closed fail as PVE's queue does", "[qmp]")
{
    TempDir dir;
    std::string socket = dir.file("100.qga");
    FakePeer peer(socket, [](Connection &c) {
        long long id = sync_id_of(c.read_until("\n"));
        c.read_until("\n");
        c.write("\xff{\"return\": " + std::to_string(id) + "}\n");
    });
    AgentClient client(socket, "100", 5s);
    CHECK_FALSE(client.execute("guest-suspend-ram").has_value());
    CHECK(failure_text([&] { client.execute("guest-ping"); }) == "Got EOF but command queue is not empty.\n");
    CHECK(peer.finish() == "");
}

TEST_CASE("qmp connect: a full accept queue is retried until the timeout", "[qmp]")
{
    TempDir dir;
    std::string socket = dir.file("busy.qmp");
    engine::Fd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strcpy(address.sun_path, socket.c_str());
    REQUIRE(::bind(listener.get(), reinterpret_cast<sockaddr *>(&address), sizeof(address)) == 0);
    REQUIRE(::listen(listener.get(), 0) == 0);
    // fill the queue of a monitor that accepts nobody (QEMU busy with a client)
    std::vector<engine::Fd> waiting;
    for (int i = 0; i < 8; i++) {
        engine::Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
        if (::connect(fd.get(), reinterpret_cast<sockaddr *>(&address), sizeof(address)) != 0) {
            REQUIRE(errno == EAGAIN);
            break;
        }
        waiting.push_back(std::move(fd));
    }
    std::string text = failure_text([&] { command({socket, "100"}, "query-status", Json::object(), 1s); });
    CHECK(text.starts_with("VM 100 qmp command 'query-status' failed - unable to connect to VM 100 qmp socket - "
                           "timeout after "));
    CHECK(text.ends_with(" retries\n"));
}
