// The subcommands of the vma command; each takes argv after "vma" (argv[0]
// is the subcommand name), returns the exit status and throws engine::Error
// on failure (main prints it and exits 1).
#pragma once

#include "vma/reader.h"

namespace vma_cli {

int list_content(int argc, char **argv);
int dump_config(int argc, char **argv);
int create_archive(int argc, char **argv);
int extract_content(int argc, char **argv);
int verify_content(int argc, char **argv);
int mount_device(int argc, char **argv);
int umount_device(int argc, char **argv);

// Prints the usage to stdout and exits 1, as Proxmox's vma does.
[[noreturn]] void help();

// The CFG:/DEV:/VMSTATE:/CTIME: lines of `vma list`.
void print_content(const engine::vma::Reader &reader);

} // namespace vma_cli
