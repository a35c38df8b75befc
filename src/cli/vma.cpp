// vma: create, list, verify and extract VMA archives; a drop-in for the
// command Proxmox ships, with exit status 1 and a message on every failure.
#include "cli/vma_commands.h"

#include "util/error.h"

#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>

int main(int argc, char **argv)
{
    // a closed pipe must become a write error (EPIPE), not a silent death
    std::signal(SIGPIPE, SIG_IGN);
    if (argc < 2)
        vma_cli::help();
    const char *command = argv[1];
    argc--;
    argv++;
    try {
        if (!std::strcmp(command, "list"))
            return vma_cli::list_content(argc, argv);
        if (!std::strcmp(command, "create"))
            return vma_cli::create_archive(argc, argv);
        if (!std::strcmp(command, "extract"))
            return vma_cli::extract_content(argc, argv);
        if (!std::strcmp(command, "verify"))
            return vma_cli::verify_content(argc, argv);
        if (!std::strcmp(command, "config"))
            return vma_cli::dump_config(argc, argv);
        if (!std::strcmp(command, "mount"))
            return vma_cli::mount_device(argc, argv);
        if (!std::strcmp(command, "umount"))
            return vma_cli::umount_device(argc, argv);
    } catch (const std::exception &e) {
        std::fflush(stdout);
        std::fprintf(stderr, "vma: %s\n", e.what());
        return 1;
    }
    vma_cli::help();
}
