// The point-in-time snapshot against a real, running QEMU from Debian (KVM
// when usable, else TCG) with a raw and a qcow2 disk: the exports keep the
// content of the instant the snapshot was taken while the guest's disks
// take new writes, every way out restores the block graph, and what a
// killed backup left in QEMU is removed before the next one.
#include "nbd/connection.h"
#include "qmp/monitor.h"
#include "upstream/snapshot.h"
#include "util/fd.h"
#include "qmp_test_support.h"
#include "vma_test_support.h"

#include "catch2_compat.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <optional>

using engine::Json;
using engine::upstream::Snapshot;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kBlock = 64 * 1024;

bool run(const std::string &command)
{
    return std::system((command + " >/dev/null 2>&1").c_str()) == 0;
}

Json args(std::initializer_list<std::pair<const char *, Json>> members)
{
    Json result = Json::object();
    for (const auto &[key, value] : members)
        result.set(key, value);
    return result;
}

// VM 100 running (no OS) with drive-scsi0 (raw) and drive-scsi1 (qcow2),
// both 8 MiB with the byte 0x11 in their first 64 KiB.
struct Vm {
    vma_test::TempDir dir;
    engine::qmp::Peer peer{dir / "100.qmp", "100"};
    std::optional<qmp_test::Child> qemu;

    // Empty on success, else why QEMU could not be started.
    std::string start()
    {
        std::string raw = dir / "disk0.raw", qcow2 = dir / "disk1.qcow2";
        if (!run("qemu-img create -f raw " + raw + " 8M") || !run("qemu-io -f raw -c 'write -P 0x11 0 64k' " + raw) ||
            !run("qemu-img convert -f raw -O qcow2 " + raw + " " + qcow2))
            return "qemu-img failed (is qemu-utils installed?)";
        // HMP qemu-io reports on QEMU's stdout
        std::vector<std::string> argv = {"sh", "-c", "exec \"$0\" \"$@\" >/dev/null", "qemu-system-x86_64"};
        const std::vector<std::string> &accel = qmp_test::qemu_accel().options;
        argv.insert(argv.end(), accel.begin(), accel.end());
        argv.insert(argv.end(),
                    {"-machine", "q35", "-nodefaults", "-nographic", "-display", "none", "-m", "64", "-name", "vm100",
                     "-qmp", "unix:" + peer.socket_path + ",server=on,wait=off", "-device",
                     "virtio-scsi-pci,id=scsihw0", "-drive",
                     "file=" + raw + ",if=none,id=drive-scsi0,format=raw,cache=none", "-device",
                     "scsi-hd,bus=scsihw0.0,channel=0,scsi-id=0,lun=0,drive=drive-scsi0,id=scsi0", "-drive",
                     "file=" + qcow2 + ",if=none,id=drive-scsi1,format=qcow2,cache=none", "-device",
                     "scsi-hd,bus=scsihw0.0,channel=0,scsi-id=0,lun=1,drive=drive-scsi1,id=scsi1"});
        qemu.emplace(argv);
        if (!qmp_test::wait_for_socket(peer.socket_path, 20s))
            return "qemu-system-x86_64 did not open its QMP socket within 20 s";
        return "";
    }

    Json qmp(const std::string &execute, const Json &arguments = Json::object())
    {
        return engine::qmp::command(peer, execute, arguments);
    }

    // Writes the byte `pattern` into the first 64 KiB of a drive, as the
    // guest would (through its device), and flushes it to the image.
    void write(const std::string &drive, int pattern)
    {
        for (std::string io : {"write -P " + std::to_string(pattern) + " 0 64k", std::string("flush")})
            REQUIRE(engine::qmp::human_monitor_command(peer, "qemu-io " + drive + " \"" + io + "\"").empty());
    }

    // Which node each drive sits on, the named nodes, block jobs and exports.
    std::string graph()
    {
        std::string text;
        Json block = qmp("query-block");
        for (size_t i = 0; i < block.size(); i++)
            text += "drive " + block.at(i).member("device").as_string() + " on " +
                    block.at(i).member("inserted").member("node-name").as_string() + "\n";
        Json nodes = qmp("query-named-block-nodes", args({{"flat", Json::boolean(true)}}));
        for (size_t i = 0; i < nodes.size(); i++)
            text += "node " + nodes.at(i).member("node-name").as_string() + "\n";
        text += "jobs " + qmp("query-jobs").text() + "\n";
        text += "exports " + qmp("query-block-exports").text() + "\n";
        return text;
    }
};

#define START_VM(vm)                                                                                                   \
    REQUIRE_REAL_QEMU();                                                                                               \
    Vm vm;                                                                                                             \
    if (std::string why = vm.start(); !why.empty())                                                                    \
        FAIL("cannot start QEMU: " << why);

vma_test::Bytes read_export(const Snapshot &snapshot, const std::string &name)
{
    engine::nbd::Connection connection(snapshot.nbd_socket(), name);
    vma_test::Bytes data(kBlock);
    connection.read(data.data(), data.size(), 0);
    return data;
}

bool exists(const std::string &path)
{
    return ::access(path.c_str(), F_OK) == 0;
}

std::vector<engine::upstream::DiskRequest> both_disks()
{
    return {{"drive-scsi0", "", ""}, {"drive-scsi1", "", ""}};
}

} // namespace

TEST_CASE("snapshot: the exports keep the instant's content; restore puts the graph back", "[upstream]")
{
    START_VM(vm);
    const std::string before = vm.graph();
    std::vector<std::string> log;
    {
        Snapshot snapshot({vm.peer, both_disks(), vm.dir.path(), [&](const std::string &line) { log.push_back(line); }});
        CHECK(vm.graph() != before); // filters and fleecing nodes added ...
        CHECK(vm.graph().find("drive drive-scsi0 on cbw-scsi0") == std::string::npos); // ... not yet switched to
        CHECK(exists(vm.dir / "fleece-scsi0.raw"));

        snapshot.take();
        CHECK(vm.graph().find("drive drive-scsi0 on cbw-scsi0") != std::string::npos);
        CHECK(vm.graph().find("drive drive-scsi1 on cbw-scsi1") != std::string::npos);
        CHECK(vm.qmp("query-status").member("status").as_string() == "running");
        vm.write("drive-scsi0", 0x77);
        vm.write("drive-scsi1", 0x77);

        snapshot.export_over_nbd();
        REQUIRE(snapshot.disks().size() == 2);
        for (const Snapshot::Disk &disk : snapshot.disks()) {
            CHECK(disk.export_name == disk.device);
            CHECK(disk.size == 8 << 20);
            CHECK(read_export(snapshot, disk.export_name) == vma_test::Bytes(kBlock, 0x11));
        }
        snapshot.restore();
        CHECK(vm.graph() == before);
        CHECK_FALSE(exists(vm.dir / "fleece-scsi0.raw"));
        CHECK_FALSE(exists(vm.dir / "fleece-scsi1.raw"));
        CHECK_FALSE(exists(snapshot.nbd_socket()));
    } // a second restore (the destructor's) does nothing
    CHECK(vm.graph() == before);
    CHECK(log.empty());
    // the guest's own disk took the write
    vma_test::Bytes live = vma_test::read_file(vm.dir / "disk0.raw");
    CHECK(vma_test::Bytes(live.begin(), live.begin() + kBlock) == vma_test::Bytes(kBlock, 0x77));
}

TEST_CASE("snapshot: a failed setup or an abandoned snapshot leaves nothing behind", "[upstream]")
{
    START_VM(vm);
    const std::string before = vm.graph();

    CHECK_THROWS_WITH(Snapshot({vm.peer, {{"drive-scsi0", "", ""}, {"drive-scsi9", "", ""}}, vm.dir.path(), nullptr}),
                      "drive 'drive-scsi9' not found in QEMU");
    CHECK(vm.graph() == before);
    CHECK_FALSE(exists(vm.dir / "fleece-scsi0.raw"));

    {
        Snapshot snapshot({vm.peer, both_disks(), vm.dir.path(), nullptr});
        snapshot.take();
        snapshot.export_over_nbd();
        engine::nbd::Connection reader(snapshot.nbd_socket(), "drive-scsi1"); // a client still connected
    } // the destructor restores
    CHECK(vm.graph() == before);
    CHECK_FALSE(exists(vm.dir / "fleece-scsi1.raw"));
}

TEST_CASE("snapshot: what a killed backup left in QEMU is removed first", "[upstream]")
{
    START_VM(vm);
    const std::string before = vm.graph();

    // the state of a backup killed while exporting drive-scsi0's snapshot
    vma_test::TempDir old_work_dir;
    const std::string old_image = old_work_dir / "fleece-scsi0.raw";
    REQUIRE(run("qemu-img create -f raw " + old_image + " 8M"));
    Json block = vm.qmp("query-block");
    const std::string original = block.at(0).member("inserted").member("node-name").as_string();
    // with "size" as the engine adds it: QEMU then names the node's file "json:{...}"
    vm.qmp("blockdev-add", args({{"driver", Json::string("raw")},
                                 {"node-name", Json::string("fleece-scsi0")},
                                 {"size", Json::integer(8 << 20)},
                                 {"file", args({{"driver", Json::string("file")}, {"filename", Json::string(old_image)}})}}));
    vm.qmp("blockdev-add", args({{"driver", Json::string("copy-before-write")},
                                 {"node-name", Json::string("cbw-scsi0")},
                                 {"file", Json::string(original)},
                                 {"target", Json::string("fleece-scsi0")}}));
    vm.qmp("qom-set", args({{"path", Json::string("/machine/peripheral/scsi0")},
                            {"property", Json::string("drive")},
                            {"value", Json::string("cbw-scsi0")}}));
    vm.qmp("blockdev-add", args({{"driver", Json::string("snapshot-access")},
                                 {"node-name", Json::string("snap-scsi0")},
                                 {"file", Json::string("cbw-scsi0")}}));
    vm.qmp("nbd-server-start",
           args({{"addr", args({{"type", Json::string("unix")},
                                {"data", args({{"path", Json::string(old_work_dir / "nbd.sock")}})}})}}));
    vm.qmp("block-export-add", args({{"type", Json::string("nbd")},
                                     {"id", Json::string("vzdump-scsi0")},
                                     {"node-name", Json::string("snap-scsi0")},
                                     {"name", Json::string("drive-scsi0")},
                                     {"writable", Json::boolean(false)}}));
    REQUIRE(vm.graph() != before);

    std::vector<std::string> log;
    Snapshot snapshot({vm.peer, both_disks(), vm.dir.path(), [&](const std::string &line) { log.push_back(line); }});
    CHECK(log == std::vector<std::string>{"removing what an earlier backup left in QEMU: export vzdump-scsi0, "
                                          "node snap-scsi0, node cbw-scsi0, node fleece-scsi0"});
    CHECK_FALSE(exists(old_image));
    snapshot.take();
    snapshot.export_over_nbd();
    CHECK(read_export(snapshot, "drive-scsi0") == vma_test::Bytes(kBlock, 0x11));
    snapshot.restore();
    CHECK(vm.graph() == before);
}
