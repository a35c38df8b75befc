// The QMP client against the pve-qemu simulator (build/pve-qemu-sim): a full
// VMA backup over a passed pipe, polled to done, the archive verified and
// extracted with build/vma and compared with the drives; then the backup
// errors and faults the plugin meets.
#include "qmp/error.h"
#include "qmp/monitor.h"
#include "qmp_test_support.h"
#include "util/fd.h"
#include "vma/reader.h"

#include "catch2_compat.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <optional>
#include <iterator>
#include <random>
#include <sstream>
#include <thread>

using engine::Json;
using namespace engine::qmp;
using namespace std::chrono_literals;
using qmp_test::Child;
using qmp_test::TempDir;
using qmp_test::failure_text;

namespace {

// PVE_QEMU_SIM / VMA select other builds (e.g. the ASan ones).
const char *from_env(const char *name, const char *fallback)
{
    const char *value = std::getenv(name);
    return value && *value ? value : fallback;
}
const std::string kSimulator = from_env("PVE_QEMU_SIM", "build/pve-qemu-sim");
const std::string kVma = from_env("VMA", "build/vma");

// Random data with runs of zeros, so the archive has both kinds of blocks.
void write_image(const std::string &path, size_t size, unsigned seed)
{
    std::mt19937 random(seed);
    std::string data(size, '\0');
    for (size_t offset = 0; offset < size; offset += 4096) {
        if (random() % 3 == 0)
            continue;
        for (size_t i = offset; i < std::min(size, offset + 4096); i++)
            data[i] = static_cast<char>(random());
    }
    std::ofstream(path, std::ios::binary).write(data.data(), static_cast<std::streamsize>(data.size()));
}

std::string slurp(const std::string &path)
{
    std::ifstream file(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(file), {});
}

struct Sim {
    TempDir dir;
    std::string qmp = dir.file("100.qmp");
    std::string qga = dir.file("100.qga");
    std::string log = dir.file("commands.log");
    std::string disk0 = dir.file("disk0.raw");
    std::string disk1 = dir.file("disk1.raw");
    std::optional<Child> process;

    explicit Sim(const std::vector<std::string> &extra = {})
    {
        write_image(disk0, 5 << 20, 1);
        write_image(disk1, (1 << 20) + 3 * 512, 2); // not a whole cluster
        std::vector<std::string> argv = {kSimulator, "--qmp", qmp, "--qga", qga, "--log", log,
                                         "--status", "prelaunch", "--drive", "drive-scsi0=" + disk0,
                                         "--drive", "drive-scsi1=" + disk1};
        argv.insert(argv.end(), extra.begin(), extra.end());
        process.emplace(argv);
        REQUIRE(qmp_test::wait_for_socket(qmp, 10s));
    }

    Peer peer() const { return {qmp, "100"}; }

    // The log's lines as JSON, in order.
    std::vector<Json> logged() const
    {
        std::vector<Json> lines;
        std::istringstream text(slurp(log));
        for (std::string line; std::getline(text, line);)
            lines.push_back(Json::parse(line));
        return lines;
    }
};

Json backup_arguments(const std::string &devlist, const std::string &config)
{
    Json arguments = Json::object();
    arguments.set("backup-file", Json::string("/dev/fdname/backup"));
    arguments.set("devlist", Json::string(devlist));
    arguments.set("config-file", Json::string(config));
    arguments.set("speed", Json::integer(0));
    return arguments;
}

// Polls query-backup once per 50 ms, a new connection each time (as the
// status loop does), until the job is no longer active.
Json poll_until_finished(const Peer &peer)
{
    for (int i = 0; i < 600; i++) {
        Json status = command(peer, "query-backup", Json::object());
        if (status.member("status").as_string() != "active")
            return status;
        std::this_thread::sleep_for(50ms);
    }
    FAIL("backup still active after 30 s");
    return Json();
}

// The (device, cluster) order in which an archive stores clusters.
class OrderSink : public engine::vma::ClusterSink {
  public:
    std::vector<std::pair<int, uint32_t>> order;
    void cluster(const engine::vma::DeviceInfo &dev, uint32_t cluster, uint16_t, const uint8_t *) override
    {
        order.emplace_back(dev.id, cluster);
    }
    bool wants_data() const override { return false; }
};

// Whether clusters come device after device, each in ascending order.
bool sequential(const std::vector<std::pair<int, uint32_t>> &order)
{
    for (size_t i = 1; i < order.size(); i++) {
        if (order[i] < order[i - 1])
            return false;
    }
    return true;
}

} // namespace

TEST_CASE("simulator: a vma backup over a passed pipe, verified and extracted", "[qmp][sim]")
{
    bool interleave = GENERATE(false, true);
    Sim sim(interleave ? std::vector<std::string>{"--interleave"} : std::vector<std::string>{});
    std::string config = sim.dir.file("100.conf");
    std::ofstream(config) << "boot: order=scsi0\nscsi0: local:100/vm-100-disk-0.raw,size=5M\n";

    CHECK(command(sim.peer(), "query-backup", Json::object()).text() == R"({"finishing":false})");

    int ends[2];
    REQUIRE(::pipe2(ends, O_CLOEXEC) == 0);
    engine::Fd read_end(ends[0]), write_end(ends[1]);
    std::string archive = sim.dir.file("backup.vma");
    std::thread drain([&] {
        engine::Fd out(::open(archive.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
        char chunk[65536];
        ssize_t got;
        while ((got = ::read(read_end.get(), chunk, sizeof(chunk))) > 0)
            engine::write_all(out.get(), chunk, static_cast<size_t>(got), "write archive");
    });

    Json getfd = Json::object();
    getfd.set("fdname", Json::string("backup"));
    std::vector<Json> started = batch(sim.peer(), {{"getfd", getfd}, {"backup", backup_arguments("drive-scsi0,drive-scsi1", config)}},
                                      write_end.get(), 30s);
    write_end = engine::Fd(); // QEMU holds it now, as after the plugin's close
    REQUIRE(started.size() == 2);
    std::string uuid = started[1].member("UUID").as_string();
    CHECK(uuid.size() == 36);

    Json status = poll_until_finished(sim.peer());
    drain.join();
    CHECK(status.member("status").as_string() == "done");
    int64_t total = (5 << 20) + (1 << 20) + 3 * 512;
    CHECK(status.member("total").as_integer() == total);
    CHECK(status.member("transferred").as_integer() == total);
    CHECK(status.member("dirty").as_integer() == total);
    CHECK(status.member("reused").as_integer() == 0);
    CHECK(status.member("zero-bytes").as_integer() > 0);
    CHECK(status.member("uuid").as_string() == uuid);
    CHECK(status.member("finishing").as_boolean() == false);
    CHECK(status.has("end-time"));

    REQUIRE(std::system((kVma + " verify " + archive + " >/dev/null").c_str()) == 0);
    std::string extracted = sim.dir.file("extracted");
    REQUIRE(std::system((kVma + " extract " + archive + " " + extracted + " >/dev/null").c_str()) ==
            0);
    CHECK(slurp(extracted + "/disk-drive-scsi0.raw") == slurp(sim.disk0));
    CHECK(slurp(extracted + "/disk-drive-scsi1.raw") == slurp(sim.disk1));
    CHECK(slurp(extracted + "/100.conf") == slurp(config));
    OrderSink layout;
    engine::vma::Reader::open(archive)->read_extents(layout);
    CHECK(sequential(layout.order) == !interleave);

    // the conversation as the simulator recorded it
    std::vector<std::string> executed;
    for (const Json &line : sim.logged()) {
        if (line.member("execute").as_string() != "qmp_capabilities")
            executed.push_back(line.member("execute").as_string());
        if (line.member("execute").as_string() == "getfd")
            CHECK(line.member("fd").as_boolean());
        if (line.member("execute").as_string() == "backup")
            CHECK(line.member("arguments").member("devlist").as_string() == "drive-scsi0,drive-scsi1");
    }
    REQUIRE(executed.size() >= 4);
    CHECK(executed[0] == "query-backup");
    CHECK(executed[1] == "getfd");
    CHECK(executed[2] == "backup");
    CHECK(executed.back() == "query-backup");
}

TEST_CASE("simulator: pve-qemu's backup errors reach the caller as PVE's texts", "[qmp][sim]")
{
    Sim sim;
    Peer peer = sim.peer();
    Json arguments = backup_arguments("drive-scsi0,drive-virtio9", sim.dir.file("none.conf"));
    CHECK(failure_text([&] { command(peer, "backup", arguments); }) ==
          "VM 100 qmp command 'backup' failed - Device 'drive-virtio9' not found\n");
    arguments = backup_arguments("drive-scsi0", sim.dir.file("none.conf"));
    CHECK(failure_text([&] { command(peer, "backup", arguments); }) ==
          "VM 100 qmp command 'backup' failed - can't open file /dev/fdname/backup - Bad file descriptor\n");
    arguments.set("speed", Json::string("0"));
    CHECK(failure_text([&] { command(peer, "backup", arguments); }) ==
          "VM 100 qmp command 'backup' failed - Invalid parameter type for 'speed', expected: integer\n");
    arguments = backup_arguments("drive-scsi0", sim.dir.file("none.conf"));
    arguments.set("fleecing", Json::boolean(true));
    std::string fleecing = sim.dir.file("fleece.raw");
    write_image(fleecing, 4 << 20, 3);
    CHECK(human_monitor_command(peer, "drive_add auto \"file=" + fleecing +
                                          ",if=none,id=drive-scsi0-fleecing,format=raw,discard=unmap\"") == "OK\r\n");
    CHECK(failure_text([&] { command(peer, "backup", arguments); }) ==
          "VM 100 qmp command 'backup' failed - Size mismatch for 'drive-scsi0-fleecing' - sector count 8192 != "
          "10240\n");
    Json pbs = Json::object();
    pbs.set("backup-file", Json::string("root@pam@pbs:store"));
    pbs.set("format", Json::string("pbs"));
    CHECK(failure_text([&] { command(peer, "backup", pbs); }) ==
          "VM 100 qmp command 'backup' failed - missing parameter 'password'\n");
    CHECK(command(peer, "query-status", Json::object()).member("status").as_string() == "prelaunch");
    CHECK(command(peer, "cont", Json::object()).text() == "{}");
    CHECK(command(peer, "query-status", Json::object()).member("status").as_string() == "running");
}

TEST_CASE("simulator: a job failing midway", "[qmp][sim]")
{
    Sim sim({"--backup-error-at", "2097152"});
    Peer peer = sim.peer();
    Json arguments = backup_arguments("drive-scsi0", "");
    arguments.remove("config-file");
    arguments.set("backup-file", Json::string(sim.dir.file("failed.vma")));
    std::string uuid = command(peer, "backup", arguments).member("UUID").as_string();
    Json status = poll_until_finished(peer);
    CHECK(status.member("status").as_string() == "error");
    CHECK(status.member("errmsg").as_string() == "job failed with err -5 - Input/output error");
    CHECK(status.member("uuid").as_string() == uuid);
}

TEST_CASE("simulator: backup-cancel ends a running job", "[qmp][sim]")
{
    // a second per 4 MiB copied: the job is still running when the cancel comes
    Sim sim({"--backup-delay", "1000"});
    Peer peer = sim.peer();
    Json arguments = backup_arguments("drive-scsi0", "");
    arguments.remove("config-file");
    arguments.set("backup-file", Json::string(sim.dir.file("canceled.vma")));
    command(peer, "backup", arguments);
    CHECK(failure_text([&] { command(peer, "backup", arguments); }) ==
          "VM 100 qmp command 'backup' failed - previous backup for target 'Proxmox' not finished\n");
    CHECK(command(peer, "backup-cancel", Json::object()).text() == "{}");
    Json status = poll_until_finished(peer);
    CHECK(status.member("status").as_string() == "error");
    CHECK(status.member("errmsg").as_string() == "backup canceled");
}

TEST_CASE("simulator: faults the client must survive", "[qmp][sim]")
{
    Sim sim({"--hang", "query-backup@2", "--drop", "query-status@1", "--fail", "cont=resume failed", "--without",
             "query-proxmox-support"});
    Peer peer = sim.peer();
    CHECK(command(peer, "query-backup", Json::object()).text() == R"({"finishing":false})");
    CHECK(failure_text([&] { command(peer, "query-backup", Json::object(), 300ms); }) ==
          "VM 100 qmp command 'query-backup' failed - got timeout\n");
    CHECK(failure_text([&] { command(peer, "query-status", Json::object()); }) ==
          "VM 100 qmp command 'query-status' failed - client closed connection\n");
    CHECK(command(peer, "query-status", Json::object()).member("status").as_string() == "prelaunch");
    CHECK(failure_text([&] { command(peer, "cont", Json::object()); }) ==
          "VM 100 qmp command 'cont' failed - resume failed\n");
    CHECK(failure_text([&] { command(peer, "query-proxmox-support", Json::object()); }) ==
          "VM 100 qmp command 'query-proxmox-support' failed - The command query-proxmox-support has not been "
          "found\n");
    // the guest agent answers through the sync handshake
    CHECK(agent_command({sim.qga, "100"}, "guest-fsfreeze-freeze", Json::object()).as_integer() == 1);
    CHECK(agent_command({sim.qga, "100"}, "guest-fsfreeze-status", Json::object()).as_string() == "frozen");
    CHECK(agent_command({sim.qga, "100"}, "guest-fsfreeze-thaw", Json::object()).as_integer() == 1);
}

TEST_CASE("simulator: a crash leaves a dead socket behind", "[qmp][sim]")
{
    Sim sim({"--die", "stop"});
    Peer peer = sim.peer();
    CHECK(failure_text([&] { command(peer, "stop", Json::object()); }) ==
          "VM 100 qmp command 'stop' failed - client closed connection\n");
    CHECK(sim.process->wait_exit(5s) != -1);
    CHECK(failure_text([&] { command(peer, "query-status", Json::object()); }) ==
          "VM 100 qmp command 'query-status' failed - unable to connect to VM 100 qmp socket - Connection "
          "refused\n");
}
