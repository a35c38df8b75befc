// vma extract [-v] [-d DRIVE-LIST] [-r MAP] ARCHIVE DIR and
// vma verify [-v] [--output-format F] ARCHIVE.
#include "cli/vma_commands.h"

#include "cli/drive_list.h"
#include "cli/progress.h"
#include "cli/vma_json.h"

#include "util/error.h"
#include "util/fd.h"
#include "vma/restore.h"
#include "vma/restore_map.h"
#include "vma/target_open.h"

#include <cstdio>
#include <ctime>
#include <fcntl.h>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace vma_cli {

namespace {

using engine::Error;
namespace vma = engine::vma;

// A name from the archive becomes a file name in the target directory: it
// must not reach outside it.
void check_file_name(const std::string &name, const char *what)
{
    if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos)
        throw Error(std::string("unsafe ") + what + " name '" + name + "' in archive");
}

void write_config_file(const std::string &path, const std::string &data)
{
    engine::Fd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd)
        engine::throw_errno("unable to write file: Failed to create file '" + path + "'");
    engine::write_all(fd.get(), data.data(), data.size(),
                      ("unable to write file: Failed to write file '" + path + "'").c_str());
    fd.close_checked(("unable to write file: Failed to close file '" + path + "'").c_str());
}

void print_progress(time_t start, unsigned percent, std::uint64_t bytes)
{
    std::printf("progress %u%% (read %llu bytes, duration %lld sec)\n", percent,
                static_cast<unsigned long long>(bytes), static_cast<long long>(time(nullptr) - start));
    std::fflush(stdout);
}

void print_summary(const vma::RestoreStats &stats)
{
    if (!stats.clusters) {
        std::printf("vma archive contains no image data\n");
        return;
    }
    std::printf("total bytes read %llu, sparse bytes %llu (%.3g%%)\n",
                static_cast<unsigned long long>(stats.bytes),
                static_cast<unsigned long long>(stats.zero_bytes),
                stats.bytes ? 100.0 * double(stats.zero_bytes) / double(stats.bytes) : 0.0);
    std::uint64_t data = stats.bytes - stats.zero_bytes;
    if (data) // no sense for an all-zero archive
        std::printf("space reduction due to 4K zero blocks %.3g%%\n",
                    100.0 * double(stats.partial_zero_bytes) / double(data));
    std::fflush(stdout);
}

void run_restore(vma::Restorer &restorer, vma::Reader &reader, bool verbose, const char *label)
{
    time_t start = time(nullptr);
    if (verbose)
        restorer.set_progress(
            [start](unsigned percent, std::uint64_t bytes) { print_progress(start, percent, bytes); });
    TerminalProgress line(label, verbose);
    restorer.set_tick([&](std::uint64_t bytes) { line.update(bytes, restorer.total_bytes()); });
    restorer.run(reader);
    line.finish();
    if (verbose)
        print_summary(restorer.stats());
}

// What extract creates in its target directory, the directory included:
// removed again unless the restore succeeds, so a failed extract leaves
// nothing behind. Targets named by a map exist already and are not ours.
class CreatedFiles {
public:
    explicit CreatedFiles(std::string dir) : dir_(std::move(dir)) {}
    ~CreatedFiles()
    {
        if (kept_)
            return;
        for (const auto &path : paths_)
            unlink(path.c_str());
        rmdir(dir_.c_str());
    }
    std::string add(const std::string &path) { return paths_.emplace_back(path); }
    void keep() { kept_ = true; }

private:
    std::string dir_;
    std::vector<std::string> paths_;
    bool kept_ = false;
};

} // namespace

int extract_content(int argc, char **argv)
{
    bool verbose = false;
    const char *readmap = nullptr;
    DriveList drives;
    for (int c; (c = getopt(argc, argv, "hvd:r:")) != -1;) {
        if (c == 'r')
            readmap = optarg;
        else if (c == 'd')
            drives.add(optarg);
        else if (c == 'v')
            verbose = true;
        else
            help();
    }
    if (optind + 2 != argc)
        help();
    std::string filename = argv[optind], dirname = argv[optind + 1];

    auto reader = vma::Reader::open(filename);
    drives.check_known(*reader);
    for (const auto &config : reader->configs())
        check_file_name(config.name, "config file");
    if (mkdir(dirname.c_str(), 0777) < 0)
        engine::throw_errno("unable to create target directory " + dirname);
    CreatedFiles created(dirname);
    for (const auto &config : reader->configs())
        write_config_file(created.add(dirname + "/" + config.name), config.data);

    std::map<std::string, vma::MapEntry> devmap;
    if (readmap) {
        print_content(*reader);
        devmap = vma::read_restore_map(readmap);
    }

    vma::Restorer restorer(*reader);
    std::map<std::string, std::shared_ptr<vma::Throttle>> groups;
    for (const auto &dev : reader->devices()) {
        // a device not selected is still read and checked, not written
        if (!drives.selects(dev))
            continue;
        if (dev.vmstate) {
            std::string statefn = created.add(dirname + "/vmstate.bin");
            try {
                restorer.set_target(dev, vma::RestoreTarget::create_sparse(statefn, 0));
            } catch (const Error &e) {
                throw Error("create vmstate file '" + statefn + "' failed - " + e.what());
            }
            continue;
        }
        if (!readmap) {
            check_file_name(dev.name, "device");
            std::string devfn = dirname + "/tmp-disk-" + dev.name + ".raw";
            std::printf("DEVINFO %s %llu\n", devfn.c_str(), static_cast<unsigned long long>(dev.size));
            std::fflush(stdout);
            // a new sparse file reads as zeros: zero blocks need no writes
            restorer.set_target(dev, vma::RestoreTarget::create_sparse(devfn, dev.size));
            created.add(devfn);
            continue;
        }
        auto it = devmap.find(dev.name);
        if (it == devmap.end())
            throw Error("no device name mapping for " + dev.name);
        const vma::MapEntry &map = it->second;
        std::optional<vma::CacheMode> cache;
        if (map.cache)
            cache = vma::parse_cache_mode(*map.cache);
        auto target = vma::open_map_target(map.path, map.format, cache, map.write_zero);
        std::shared_ptr<vma::Throttle> throttle;
        if (map.throttling_group) {
            auto &group = groups[*map.throttling_group];
            if (!group)
                group = std::make_shared<vma::Throttle>();
            if (map.throttling_bps)
                group->set_rate(map.throttling_bps);
            throttle = group;
        } else if (map.throttling_bps) {
            throttle = std::make_shared<vma::Throttle>(map.throttling_bps);
        }
        if (throttle)
            target->set_throttle(throttle);
        restorer.set_target(dev, std::move(target));
    }

    try {
        run_restore(restorer, *reader, verbose, "extract");
    } catch (const Error &e) {
        throw Error(std::string("restore failed - ") + e.what());
    }

    if (!readmap) {
        for (const auto &dev : reader->devices()) {
            if (dev.vmstate || !drives.selects(dev))
                continue;
            std::string tmpfn = dirname + "/tmp-disk-" + dev.name + ".raw";
            std::string fn = dirname + "/disk-" + dev.name + ".raw";
            if (rename(tmpfn.c_str(), fn.c_str()) != 0)
                engine::throw_errno("rename " + tmpfn + " to " + fn + " failed");
            created.add(fn);
        }
    }
    created.keep();
    return 0;
}

int verify_content(int argc, char **argv)
{
    bool verbose = false;
    OutputFormat format = OutputFormat::Text;
    for (int c; (c = getopt_long(argc, argv, "hv", kOutputFormatOption, nullptr)) != -1;) {
        if (c == 'v')
            verbose = true;
        else if (c == 'o')
            format = parse_output_format(optarg);
        else
            help();
    }
    if (optind + 1 != argc)
        help();
    if (format != OutputFormat::Text) {
        // -v's lines would break the JSON on stdout
        if (verbose)
            throw Error("-v cannot be combined with JSON output");
        return verify_as_json(argv[optind], format);
    }
    auto reader = vma::Reader::open(argv[optind]);
    if (verbose)
        print_content(*reader);
    vma::Restorer restorer(*reader);
    try {
        run_restore(restorer, *reader, verbose, "verify");
    } catch (const Error &e) {
        throw Error(std::string("verify failed - ") + e.what());
    }
    return 0;
}

} // namespace vma_cli
