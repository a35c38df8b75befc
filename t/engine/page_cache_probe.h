// What the kernel keeps of a file in its page cache, measured from outside,
// for the tests of the engine's cache handling (write-behind, early
// writeback). How much of the cache a program can see or drop depends on the
// file system (tmpfs keeps every page, overlayfs hides them from cachestat and
// sync_file_range), so the tests measure a control file by hand first and
// name the file system when the control shows nothing to compare with.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>

namespace engine_test {

// How many pages of [offset, offset + length) of the file are cached
// (mincore(2) of a shared read-only mapping; fd must be open for reading).
std::size_t cached_pages(int fd, off_t offset, std::size_t length);

// The file's dirty pages as cachestat(2) (Linux 6.5) counts them, or -1 with
// errno set where the kernel has no cachestat.
long dirty_pages(int fd);

// The type of the file system holding path as the kernel names it
// ("ext4", "overlay", "tmpfs"): the fstype of the mount in /proc/self/mounts
// whose mount point is the longest prefix of path's canonical form.
std::string fs_type(const std::string &path);

// "not applicable on <fs_type(dir)>: a control file <control_showed>": what a
// test warns instead of a cache check that its control in dir shows cannot
// be made there.
std::string not_applicable(const std::string &dir, const std::string &control_showed);

} // namespace engine_test
