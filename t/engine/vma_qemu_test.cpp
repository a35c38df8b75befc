// vma's path through QEMU's block layer against Debian's real qemu-img and
// qemu-nbd: the private export (socket directory, cleanup, QEMU's errors),
// a qcow2 read for an archive (only its allocated data crosses the socket)
// and a qcow2 written as a restore target (data, write-zeroes, flush).
#include "nbd/qemu_nbd_export.h"
#include "nbd/write_queue.h"
#include "qmp_test_support.h"
#include "util/error.h"
#include "vma/qemu_image_source.h"
#include "vma/qemu_restore_target.h"
#include "vma/writer.h"
#include "vma_test_support.h"

#include "catch2_compat.h"

#include <dirent.h>
#include <fcntl.h>
#include <csignal>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

namespace {

constexpr std::uint64_t kKiB = 1024;
constexpr std::uint64_t kMiB = 1024 * kKiB;

void run(const std::string &command)
{
    INFO(command);
    REQUIRE(std::system(command.c_str()) == 0);
}

// Points TMPDIR at a directory of the test's own while it lives, so what the
// export leaves there can be listed.
struct PrivateTmp {
    vma_test::TempDir dir;
    std::string saved;
    bool had;
    PrivateTmp()
    {
        const char *old = std::getenv("TMPDIR");
        had = old != nullptr;
        saved = old ? old : "";
        setenv("TMPDIR", dir.path().c_str(), 1);
    }
    ~PrivateTmp()
    {
        if (had)
            setenv("TMPDIR", saved.c_str(), 1);
        else
            unsetenv("TMPDIR");
    }
    std::vector<std::string> entries() const
    {
        std::vector<std::string> names;
        DIR *d = opendir(dir.path().c_str());
        for (dirent *e; d && (e = readdir(d));)
            if (std::string(e->d_name) != "." && std::string(e->d_name) != "..")
                names.push_back(e->d_name);
        if (d)
            closedir(d);
        return names;
    }
};

engine::nbd::QemuNbdOptions export_options(const std::string &filename, bool read_only)
{
    engine::nbd::QemuNbdOptions options;
    options.filename = filename;
    options.format = "qcow2";
    options.read_only = read_only;
    return options;
}

} // namespace

TEST_CASE("qemu-nbd export: a 0700 socket directory, removed at connect or with the export", "[qemu-nbd]")
{
    vma_test::TempDir work;
    PrivateTmp tmp;
    run("qemu-img create -q -f qcow2 '" + work / "disk.qcow2" + "' 1M");
    {
        engine::nbd::QemuNbdExport server(export_options(work / "disk.qcow2", true));
        auto names = tmp.entries();
        REQUIRE(names.size() == 1);
        struct stat st;
        REQUIRE(stat((tmp.dir / names[0]).c_str(), &st) == 0);
        CHECK((st.st_mode & 0777) == 0700);
        // never connected: the destructor stops qemu-nbd itself
    }
    CHECK(tmp.entries().empty());
    // once the client is in, nothing is left to find while qemu-nbd serves
    engine::nbd::QemuNbdExport server(export_options(work / "disk.qcow2", true));
    auto connection = server.connect();
    CHECK(tmp.entries().empty());
    CHECK(connection->size() == 1 * kMiB);
}

TEST_CASE("qemu-nbd export: QEMU's open error is the message", "[qemu-nbd]")
{
    vma_test::TempDir work;
    PrivateTmp tmp;
    std::string missing = work / "missing.qcow2";
    std::string text = qmp_test::failure_text([&] {
        engine::nbd::QemuNbdExport server(export_options(missing, false));
        server.connect();
    });
    CHECK(text == "Could not open '" + missing + "': No such file or directory");
    CHECK(tmp.entries().empty());
}

TEST_CASE("qemu image source: a thin qcow2 costs only its allocated data", "[qemu-nbd]")
{
    vma_test::TempDir work;
    PrivateTmp tmp;
    std::string image = work / "thin.qcow2";
    run("qemu-img create -q -f qcow2 '" + image + "' 1G");
    run("qemu-io -f qcow2 -c 'write -P 0x5a 64M 128k' -c 'write -z 128M 1M' '" + image + "' >/dev/null");

    engine::vma::QemuImageSource source(image, std::nullopt);
    REQUIRE(source.size() == 1024 * kMiB);
    engine::Fd sink(open("/dev/null", O_WRONLY | O_CLOEXEC));
    engine::vma::Writer writer(sink.get());
    auto dev = writer.add_device("drive-scsi0", source.size());
    source.write_to(writer, dev, {});
    source.finish();
    writer.finish();
    CHECK(source.bytes_read() == 128 * kKiB);
    CHECK(writer.zero_bytes(dev) == 1024 * kMiB - 128 * kKiB);
    CHECK(tmp.entries().empty());
}

TEST_CASE("qemu restore target: data, zeros as write-zeroes, flushed qcow2", "[qemu-nbd]")
{
    vma_test::TempDir work;
    PrivateTmp tmp;
    std::string base = work / "base.qcow2", image = work / "target.qcow2";
    // old data in a backing file: the clusters are QEMU's to allocate
    run("qemu-img create -q -f qcow2 '" + base + "' 2M");
    run("qemu-io -f qcow2 -c 'write -P 0xa5 0 2M' '" + base + "' >/dev/null");
    run("qemu-img create -q -f qcow2 -b '" + base + "' -F qcow2 '" + image + "' 2M");
    vma_test::Bytes data = vma_test::random_bytes(256 * kKiB, 7);

    auto target = engine::vma::open_qemu_target(image, "qcow2", std::nullopt, true);
    REQUIRE(target->size() == 2 * kMiB);
    target->write(0, data.data(), data.size());
    target->write_zero(256 * kKiB, 2 * kMiB - 256 * kKiB);
    target->finish();
    CHECK(tmp.entries().empty());

    std::string raw = work / "target.raw";
    run("qemu-img convert -O raw '" + image + "' '" + raw + "'");
    vma_test::Bytes expected(2 * kMiB, 0);
    std::copy(data.begin(), data.end(), expected.begin());
    CHECK(vma_test::first_difference(vma_test::read_file(raw), expected) == -1);
    // the zeroed range is zero clusters, not zero bytes written
    run("qemu-img map --output=json '" + image + "' | grep -q '\"zero\": true, \"data\": false'");
}

TEST_CASE("qemu-nbd export: a missing qemu-nbd names its package", "[qemu-nbd]")
{
    vma_test::TempDir work;
    PrivateTmp tmp;
    std::string saved = std::getenv("PATH") ? std::getenv("PATH") : "";
    setenv("PATH", work.path().c_str(), 1);
    std::string text = qmp_test::failure_text(
        [&] { engine::vma::open_qemu_target(work / "disk.qcow2", "qcow2", std::nullopt, false); });
    setenv("PATH", saved.c_str(), 1);
    CHECK(text == "can't open file " + work / "disk.qcow2" +
                      " - qemu-nbd not found in PATH - install the package qemu-utils");
    CHECK(tmp.entries().empty());
}

TEST_CASE("nbd write queue: every write lands; a server that dies fails the next call", "[qemu-nbd]")
{
    vma_test::TempDir work;
    std::string image = work / "disk.raw", socket = work / "nbd.sock";
    run("truncate -s 64M '" + image + "'");
    qmp_test::Child server({"qemu-nbd", "--persistent", "--format=raw", "--socket=" + socket, image});
    REQUIRE(qmp_test::wait_for_socket(socket, std::chrono::seconds(10)));
    engine::nbd::Connection connection(socket, "");
    vma_test::Bytes data = vma_test::random_bytes(6 * kMiB, 3);
    {
        // slots smaller than a write: one write becomes several requests
        engine::nbd::WriteQueue queue(connection, kMiB, 3);
        queue.write(data.data(), data.size(), 8 * kMiB);
        queue.write_zeroes(8 * kMiB + 4096, 4096);
        queue.drain();
    }
    vma_test::Bytes expected = data;
    std::fill(expected.begin() + 4096, expected.begin() + 8192, 0);
    vma_test::Bytes written = vma_test::read_file(image);
    CHECK(vma_test::first_difference(vma_test::Bytes(written.begin() + 8 * kMiB, written.begin() + 14 * kMiB),
                                     expected) == -1);

    engine::nbd::WriteQueue queue(connection, kMiB, 3);
    queue.write(data.data(), kMiB, 0);
    kill(server.pid(), SIGKILL);
    std::string text = qmp_test::failure_text([&] {
        for (int i = 0; i < 1000; i++)
            queue.write(data.data(), kMiB, std::uint64_t(i % 60) * kMiB);
        queue.drain();
    });
    CHECK_THAT(text, Catch::StartsWith("NBD write on export '' failed - "));
}
