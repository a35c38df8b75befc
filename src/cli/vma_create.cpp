// vma create [-v] [-c CONFIG]... [-d format=FMT:DEVNAME=PATH]... ARCHIVE [DEVNAME=]PATH...
#include "cli/vma_commands.h"

#include "cli/progress.h"

#include "util/error.h"
#include "util/fd.h"
#include "vma/device_source.h"
#include "vma/output.h"
#include "vma/writer.h"

#include <cerrno>
#include <cstdio>
#include <fcntl.h>
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

std::string read_config_file(const std::string &path)
{
    engine::Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st;
    if (!fd || fstat(fd.get(), &st) < 0)
        throw Error("Unable to read file: Failed to open file '" + path +
                    "': " + engine::errno_text(errno));
    // configs are at most 64 KiB; read one byte more to notice larger files
    std::string data(vma::kMaxBlobLength + 1, '\0');
    std::size_t got = engine::read_full(fd.get(), data.data(), data.size(),
                                        ("Unable to read file: Failed to read from file '" + path + "'").c_str());
    data.resize(got);
    return data;
}

struct Device {
    std::string name;
    std::unique_ptr<vma::DeviceSource> source;
    vma::DeviceId id = 0;
};

// A disk named on the command line, before it is opened.
struct DeviceArg {
    std::string name;
    std::string path;
    std::optional<std::string> format;
};

// [DEVNAME=]PATH; the name defaults to disk<index>.
DeviceArg parse_device(const std::string &arg, int index)
{
    auto eq = arg.find('=');
    if (eq == std::string::npos)
        return {"disk" + std::to_string(index), arg, std::nullopt};
    return {arg.substr(0, eq), arg.substr(eq + 1), std::nullopt};
}

// -d format=FMT:DEVNAME=PATH, as current pve-qemu's vma takes it.
DeviceArg parse_formatted_device(const std::string &arg, int index)
{
    const std::string prefix = "format=";
    auto colon = arg.find(':');
    if (!arg.starts_with(prefix) || colon == std::string::npos || colon == prefix.size())
        throw Error("invalid device '" + arg + "' - expected format=<format>:<device name>=<path>");
    DeviceArg dev = parse_device(arg.substr(colon + 1), index);
    dev.format = arg.substr(prefix.size(), colon - prefix.size());
    return dev;
}

} // namespace

int create_archive(int argc, char **argv)
{
    bool verbose = false;
    std::vector<std::string> config_files;
    std::vector<std::string> formatted_devices;
    for (int c; (c = getopt(argc, argv, "hvc:d:")) != -1;) {
        if (c == 'c')
            config_files.push_back(optarg);
        else if (c == 'd')
            formatted_devices.push_back(optarg);
        else if (c == 'v')
            verbose = true;
        else
            help();
    }
    if (optind + 1 > argc)
        help();
    std::string archive = argv[optind++];

    // everything is read and checked before the archive is created
    std::vector<std::pair<std::string, std::string>> configs;
    for (const auto &file : config_files)
        configs.emplace_back(file, read_config_file(file));
    std::vector<DeviceArg> args;
    for (const auto &arg : formatted_devices)
        args.push_back(parse_formatted_device(arg, static_cast<int>(args.size())));
    while (optind < argc)
        args.push_back(parse_device(argv[optind++], static_cast<int>(args.size())));
    std::vector<Device> devices;
    for (const auto &arg : args) {
        Device dev;
        dev.name = arg.name;
        try {
            dev.source = vma::open_device_source(arg.path, arg.format);
        } catch (const Error &e) {
            throw Error("bdrv_open '" + arg.path + "' failed - " + e.what());
        }
        devices.push_back(std::move(dev));
    }

    vma::ArchiveOutput output(archive);
    vma::Writer writer(output.fd());
    for (const auto &[file, data] : configs) {
        try {
            writer.add_config(file, data);
        } catch (const Error &e) {
            throw Error("Unable to append config data " + file + " (len = " +
                        std::to_string(data.size()) + ") - " + e.what());
        }
    }
    for (auto &dev : devices) {
        try {
            dev.id = writer.add_device(dev.name, dev.source->size());
        } catch (const Error &e) {
            throw Error("vma_writer_register_stream '" + dev.name + "' failed - " + e.what());
        }
    }

    TerminalProgress line("create", verbose);
    int last_percent = -1;
    auto report = [&] {
        std::uint64_t total = writer.total_size();
        line.update(writer.total_transferred(), total);
        if (!verbose || !total)
            return;
        std::uint64_t done = writer.total_transferred();
        int percent = static_cast<int>(done * 100 / total);
        if (percent == last_percent)
            return;
        last_percent = percent;
        std::fprintf(stderr, "progress %d%% %llu/%llu %llu\n", percent,
                     static_cast<unsigned long long>(done), static_cast<unsigned long long>(total),
                     static_cast<unsigned long long>(writer.total_zero_bytes()));
        std::fflush(stderr);
    };
    auto summary = [&] {
        if (!verbose)
            return;
        for (const auto &dev : devices) {
            std::uint64_t size = writer.device_size(dev.id), zeros = writer.zero_bytes(dev.id);
            std::fprintf(stderr, "image %s: size=%llu zeros=%llu saved=%llu\n", dev.name.c_str(),
                         static_cast<unsigned long long>(size), static_cast<unsigned long long>(zeros),
                         static_cast<unsigned long long>(size - zeros));
        }
    };

    try {
        report();
        for (auto &dev : devices) {
            dev.source->write_to(writer, dev.id, report);
            dev.source->finish();
        }
        writer.finish();
        output.commit();
        line.finish();
    } catch (const Error &e) {
        summary();
        throw Error(std::string("creating vma archive failed - ") + e.what());
    }
    summary();
    return 0;
}

} // namespace vma_cli
