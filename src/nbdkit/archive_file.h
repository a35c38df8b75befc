// The archive file the plugin serves from, opened for random access.
//
// An uncompressed archive is served in place. A compressed one (zstd, gzip
// or lzop, recognized by its magic bytes, as vzdump writes .vma.zst,
// .vma.gz and .vma.lzo) cannot be read at random: it is decompressed once,
// with the real compressor binary, into a cache file created in a private
// 0700 directory under $TMPDIR (default /var/tmp). The cache file has no
// name (O_TMPFILE, or unlinked at once) and the directory is removed again
// right away, so the space is freed when nbdkit unloads the plugin or dies,
// and nothing is ever left behind.
#pragma once

#include "util/fd.h"

#include <functional>
#include <string>

namespace engine::nbdkit_vma {

// Returns a readable fd of the uncompressed archive at path. say() gets the
// lines a user should see (what is decompressed where, and the space it
// needs). Throws Error with the reason ("can't open file X - ...", "zstd
// failed decompressing X (exit status 1)", ...).
Fd open_archive_file(const std::string &path, const std::function<void(const std::string &)> &say);

} // namespace engine::nbdkit_vma
