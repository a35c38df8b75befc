// vma list / vma config, and the archive summary other commands print too.
#include "cli/vma_commands.h"

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <unistd.h>

namespace vma_cli {

void help()
{
    std::fputs("usage: vma command [command options]\n"
               "\n"
               "vma list <filename>\n"
               "vma config <filename> [-c config]\n"
               "vma create <filename> [-c config] [-d format=<format>:<device name>=<path> [-d ...]] pathname ...\n"
               "vma extract <filename> [-r <fifo>] <targetdir>\n"
               "vma verify <filename> [-v]\n",
               stdout);
    std::exit(1);
}

void print_content(const engine::vma::Reader &reader)
{
    for (const auto &config : reader.configs())
        std::printf("CFG: size: %zu name: %s\n", config.data.size(), config.name.c_str());
    for (const auto &dev : reader.devices()) {
        if (dev.vmstate)
            std::printf("VMSTATE: dev_id=%u memory: %llu\n", dev.id,
                        static_cast<unsigned long long>(dev.size));
        else
            std::printf("DEV: dev_id=%u size: %llu devname: %s\n", dev.id,
                        static_cast<unsigned long long>(dev.size), dev.name.c_str());
    }
    // ctime is the last entry printed (qmrestore waits for it)
    std::time_t ctime = static_cast<std::time_t>(reader.ctime());
    const char *text = std::ctime(&ctime);
    std::printf("CTIME: %s", text ? text : "(invalid)\n");
    std::fflush(stdout);
}

int list_content(int argc, char **argv)
{
    for (int c; (c = getopt(argc, argv, "h")) != -1;)
        help();
    if (optind + 1 != argc)
        help();
    auto reader = engine::vma::Reader::open(argv[optind]);
    print_content(*reader);
    return 0;
}

int dump_config(int argc, char **argv)
{
    std::string name = "qemu-server.conf";
    for (int c; (c = getopt(argc, argv, "hc:")) != -1;) {
        if (c == 'c')
            name = optarg;
        else
            help();
    }
    if (optind + 1 != argc)
        help();
    auto reader = engine::vma::Reader::open(argv[optind]);
    for (const auto &config : reader->configs()) {
        if (config.name == name) {
            std::fwrite(config.data.data(), 1, config.data.size(), stdout);
            if (std::fflush(stdout) != 0)
                throw engine::Error("write to stdout failed");
            return 0;
        }
    }
    std::fprintf(stderr, "unable to find configuration data '%s'\n", name.c_str());
    return 1;
}

} // namespace vma_cli
