// The QMP client against a real QEMU from Debian, started as Proxmox starts a
// VM for a backup (paused in prelaunch, drives drive-scsiN on virtio-scsi,
// one raw and one qcow2), with the accelerator scripts/qemu-probe found.
#include "qmp/client.h"
#include "qmp/error.h"
#include "qmp/monitor.h"
#include "util/fd.h"
#include "qmp_test_support.h"

#include "catch2_compat.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>

using engine::Json;
using namespace engine::qmp;
using namespace std::chrono_literals;
using qmp_test::Child;
using qmp_test::TempDir;
using qmp_test::failure_text;

namespace {

constexpr uint64_t raw_size = 64 << 20;
constexpr uint64_t qcow2_size = 32 << 20;

bool run(const std::string &command)
{
    return std::system((command + " >/dev/null 2>&1").c_str()) == 0;
}

struct Vm {
    TempDir dir;
    std::string qmp = dir.file("100.qmp");
    std::string qga = dir.file("100.qga");
    std::optional<Child> qemu;

    // Empty on success, else why QEMU could not be started.
    std::string start()
    {
        std::string raw = dir.file("disk0.raw"), qcow2 = dir.file("disk1.qcow2");
        if (!run("qemu-img create -f raw " + raw + " " + std::to_string(raw_size)) ||
            !run("qemu-img create -f qcow2 " + qcow2 + " " + std::to_string(qcow2_size)))
            return "qemu-img failed (is qemu-utils installed?)";
        std::vector<std::string> argv = {"qemu-system-x86_64"};
        for (const std::string &option : qmp_test::qemu_accel().options)
            argv.push_back(option);
        argv.insert(argv.end(), {"-machine", "q35", "-nodefaults", "-nographic",
            "-display", "none", "-m", "64", "-S", "-name", "vm100", "-qmp",
            "unix:" + qmp + ",server=on,wait=off", "-pidfile", dir.file("100.pid"), "-chardev",
            "socket,path=" + qga + ",server=on,wait=off,id=qga0", "-device", "virtio-serial,id=vser0", "-device",
            "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0", "-device", "virtio-scsi-pci,id=scsihw0",
            "-drive", "file=" + raw + ",if=none,id=drive-scsi0,format=raw,cache=none,discard=on", "-device",
            "scsi-hd,bus=scsihw0.0,channel=0,scsi-id=0,lun=0,drive=drive-scsi0,id=scsi0", "-drive",
            "file=" + qcow2 + ",if=none,id=drive-scsi1,format=qcow2,cache=none,discard=on", "-device",
            "scsi-hd,bus=scsihw0.0,channel=0,scsi-id=0,lun=1,drive=drive-scsi1,id=scsi1"});
        qemu.emplace(argv);
        if (!qmp_test::wait_for_socket(qmp, 20s))
            return "qemu-system-x86_64 did not open its QMP socket within 20 s";
        return "";
    }
};

// Whether `fd_path` (a /proc/<pid>/fd link target) is among QEMU's fds.
bool qemu_holds(pid_t pid, const std::string &target)
{
    for (const auto &entry : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
        std::error_code error;
        if (std::filesystem::read_symlink(entry.path(), error).string() == target)
            return true;
    }
    return false;
}

// A plain client: connects and waits up to `limit` for QEMU's greeting.
bool greeting_arrives(const std::string &socket, std::chrono::milliseconds limit)
{
    engine::Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, socket.c_str(), sizeof(address.sun_path) - 1);
    if (::connect(fd.get(), reinterpret_cast<sockaddr *>(&address), sizeof(address)) != 0)
        return false;
    pollfd watch{fd.get(), POLLIN, 0};
    if (::poll(&watch, 1, static_cast<int>(limit.count())) <= 0)
        return false;
    char text[16] = {};
    return ::recv(fd.get(), text, sizeof(text) - 1, 0) > 0 && std::string(text).starts_with("{\"QMP\"");
}

} // namespace

TEST_CASE("qmp against a real QEMU: status, run state, block sizes, fds, HMP, errors", "[qmp][qemu]")
{
    REQUIRE_REAL_QEMU();
    Vm vm;
    std::string why = vm.start();
    if (!why.empty())
        FAIL("cannot start QEMU: " << why);
    Peer peer{vm.qmp, "100"};

    {
        Client client(vm.qmp, "100");
        Json status = client.execute("query-status");
        CHECK(status.member("status").as_string() == "prelaunch");
        CHECK(status.member("running").as_boolean() == false);
        Json version = client.greeting().member("QMP").member("version");
        INFO("QEMU " << version.text());
        CHECK(version.member("qemu").member("major").as_integer() >= 7);

        // cont: the RESUME event comes before the reply and is kept
        CHECK(client.execute("cont").text() == "{}");
        bool resumed = false;
        for (const Json &event : client.events())
            resumed = resumed || event.member("event").as_string() == "RESUME";
        CHECK(resumed);
        CHECK(client.execute("query-status").member("status").as_string() == "running");

        // one client at a time: a second one gets no greeting while we hold it
        CHECK_FALSE(greeting_arrives(vm.qmp, 300ms));
    }
    // ... and gets it at once after we closed (one connection per call)
    CHECK(greeting_arrives(vm.qmp, 5s));

    CHECK(command(peer, "stop", Json::object()).text() == "{}");
    CHECK(command(peer, "query-status", Json()).member("status").as_string() == "paused");
    CHECK(greeting_arrives(vm.qmp, 5s));

    // query-block: virtual sizes by drive id
    Json blocks = command(peer, "query-block", Json::object());
    std::map<std::string, int64_t> sizes;
    for (size_t i = 0; i < blocks.size(); i++) {
        Json block = blocks.at(i);
        sizes[block.member("device").as_string()] =
            block.member("inserted").member("image").member("virtual-size").as_integer();
    }
    CHECK(sizes["drive-scsi0"] == static_cast<int64_t>(raw_size));
    CHECK(sizes["drive-scsi1"] == static_cast<int64_t>(qcow2_size));

    // getfd passes a real fd; closefd drops it again
    int ends[2];
    REQUIRE(::pipe2(ends, O_CLOEXEC) == 0);
    engine::Fd read_end(ends[0]), write_end(ends[1]);
    std::string pipe_name = std::filesystem::read_symlink("/proc/self/fd/" + std::to_string(write_end.get()));
    Json fdname = Json::object();
    fdname.set("fdname", Json::string("backup"));
    std::vector<Json> results = batch(peer, {{"getfd", fdname}}, write_end.get());
    REQUIRE(results.size() == 1);
    CHECK(results[0].text() == "{}");
    CHECK(qemu_holds(vm.qemu->pid(), pipe_name));
    CHECK(command(peer, "closefd", fdname).text() == "{}");
    CHECK_FALSE(qemu_holds(vm.qemu->pid(), pipe_name));
    CHECK(failure_text([&] { command(peer, "closefd", fdname); }) ==
          "VM 100 qmp command 'closefd' failed - File descriptor named 'backup' not found\n");
    CHECK(failure_text([&] { batch(peer, {{"getfd", fdname}}, -1); }) ==
          "No file descriptor supplied via SCM_RIGHTS\n");

    // upstream QEMU lacks Proxmox's backup commands
    Json backup = Json::object();
    backup.set("backup-file", Json::string("/dev/fdname/backup"));
    backup.set("format", Json::string("vma"));
    CHECK(failure_text([&] { command(peer, "backup", backup); }) ==
          "VM 100 qmp command 'backup' failed - The command backup has not been found\n");
    CHECK(failure_text([&] { command(peer, "query-proxmox-support", Json::object()); }) ==
          "VM 100 qmp command 'query-proxmox-support' failed - The command query-proxmox-support has not been "
          "found\n");

    // HMP drive_add / drive_del, the TPM-state trick; errors come as text
    std::string tpm = vm.dir.file("tpmstate.raw");
    REQUIRE(run("qemu-img create -f raw " + tpm + " 4194304"));
    std::string add = "drive_add auto \"file=" + tpm + ",if=none,id=drive-tpmstate0-backup,format=raw,read-only=on\"";
    CHECK(human_monitor_command(peer, add) == "OK\r\n");
    CHECK(human_monitor_command(peer, add) == "Duplicate ID 'drive-tpmstate0-backup' for drive\r\n");
    bool listed = false;
    Json after = command(peer, "query-block", Json::object());
    for (size_t i = 0; i < after.size(); i++)
        listed = listed || after.at(i).member("device").as_string() == "drive-tpmstate0-backup";
    CHECK(listed);
    CHECK(human_monitor_command(peer, "drive_del drive-tpmstate0-backup") == "");
    CHECK(human_monitor_command(peer, "drive_del drive-tpmstate0-backup") ==
          "Device 'drive-tpmstate0-backup' not found\r\n");

    // QEMU's argument checking reaches the caller as PVE's text
    Json bogus = Json::object();
    bogus.set("bogus", Json::integer(1));
    CHECK(failure_text([&] { command(peer, "query-block", bogus); }) ==
          "VM 100 qmp command 'query-block' failed - Parameter 'bogus' is unexpected\n");

    // the agent chardev exists but no agent runs in the (OS-less) guest
    try {
        agent_command({vm.qga, "100"}, "guest-ping", Json::object(), 500ms);
        FAIL("guest-ping answered without a guest agent");
    } catch (const CommandFailed &e) {
        CHECK(std::string(e.what()) == "VM 100 qmp command 'guest-ping' failed - got timeout\n");
    }

    // quit: reply, then QEMU exits
    CHECK(command(peer, "quit", Json::object()).text() == "{}");
    int status = vm.qemu->wait_exit(10s);
    CHECK(status != -1);
    CHECK(WIFEXITED(status));
}
