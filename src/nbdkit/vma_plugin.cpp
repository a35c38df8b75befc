// nbdkit-vma-plugin: serves each device of a VMA archive as a read-only NBD
// export named after the device, straight from the archive (no restore).
//
//   nbdkit vma ARCHIVE [dev=NAME]
//
// get_ready reads the archive once with the engine's reader (every check of
// `vma verify`; a damaged archive, or one missing a cluster, is refused
// there with the reader's message) and builds the cluster index
// (vma/archive_index.h). Requests are then served from the archive with
// pread; unstored blocks read as zeros and are reported as holes by block
// status. Everything shared is read-only after get_ready and all I/O is
// pread, so the plugin runs in nbdkit's parallel thread model.
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "nbdkit/archive_file.h"
#include "util/error.h"
#include "util/temp_file.h"
#include "vma/archive_image.h"
#include "vma/archive_index.h"
#include "vma/reader.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fcntl.h>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

namespace {

using namespace engine;
using vma::ArchiveImage;

std::string archive_path; // absolute: nbdkit may chdir / when it forks
std::string default_name; // dev=NAME

// What get_ready builds; freed on unload (which frees the cache file too).
struct Served {
    Fd archive;
    std::unique_ptr<vma::ArchiveIndex> index;
    std::vector<ArchiveImage> images;
    const ArchiveImage *default_image = nullptr;
};
Served *served = nullptr;

void say(const std::string &line)
{
    // nbdkit has no informational level; a user starting it wants these
    std::fprintf(stderr, "nbdkit: vma: %s\n", line.c_str());
}

template <typename F>
int guarded(F f)
{
    try {
        return f();
    } catch (const std::exception &e) {
        nbdkit_error("%s", e.what());
        nbdkit_set_error(EIO);
        return -1;
    }
}

void vma_unload()
{
    delete served;
    served = nullptr;
}

int vma_config(const char *key, const char *value)
{
    std::string k = key;
    if (k == "archive") {
        char *path = nbdkit_realpath(value);
        if (!path)
            return -1;
        archive_path = path;
        std::free(path);
        return 0;
    }
    if (k == "dev") {
        default_name = value;
        return 0;
    }
    nbdkit_error("unknown parameter '%s' (the plugin takes ARCHIVE and dev=NAME)", key);
    return -1;
}

int vma_config_complete()
{
    if (archive_path.empty()) {
        nbdkit_error("no archive given: nbdkit vma ARCHIVE [dev=NAME]");
        return -1;
    }
    return 0;
}

int vma_get_ready()
{
    return guarded([] {
        auto s = std::make_unique<Served>();
        s->archive = nbdkit_vma::open_archive_file(archive_path, say);
        // the reader gets its own fd (it owns and closes it); reads use pread
        Fd for_reader(fcntl(s->archive.get(), F_DUPFD_CLOEXEC, 0));
        if (!for_reader)
            throw_errno("dup");
        posix_fadvise(for_reader.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
        {
            vma::Reader reader(std::move(for_reader));
            s->index = std::make_unique<vma::ArchiveIndex>(reader, large_temp_dir());
        }
        posix_fadvise(s->archive.get(), 0, 0, POSIX_FADV_NORMAL);
        for (const auto &dev : s->index->devices())
            s->images.emplace_back(*s->index, dev, s->archive.get());
        if (s->images.empty())
            throw Error(archive_path + " holds no device to serve");
        for (const auto &image : s->images)
            if (default_name.empty() ? !image.device().info.vmstate
                                     : image.device().info.name == default_name) {
                s->default_image = &image;
                break;
            }
        if (!s->default_image && !default_name.empty())
            throw Error("dev=" + default_name + ": no such device in " + archive_path);
        if (!s->default_image) // only vmstate
            s->default_image = &s->images.front();
        served = s.release();
        return 0;
    });
}

std::string description(const ArchiveImage &image)
{
    return "VMA device " + image.device().info.name + " (" + std::to_string(image.size()) +
           " bytes) of " + archive_path;
}

int vma_list_exports(int, int, struct nbdkit_exports *exports)
{
    for (const auto &image : served->images)
        if (nbdkit_add_export(exports, image.device().info.name.c_str(),
                              description(image).c_str()) < 0)
            return -1;
    return 0;
}

const char *vma_default_export(int, int)
{
    return served->default_image->device().info.name.c_str();
}

void *vma_open(int)
{
    std::string name = nbdkit_export_name() ? nbdkit_export_name() : "";
    if (name.empty())
        return const_cast<ArchiveImage *>(served->default_image);
    for (auto &image : served->images)
        if (image.device().info.name == name)
            return &image;
    std::string known;
    for (const auto &image : served->images)
        known += " " + image.device().info.name;
    nbdkit_error("no device '%s' in %s (exports:%s)", name.c_str(), archive_path.c_str(),
                 known.c_str());
    return nullptr;
}

const char *vma_export_description(void *handle)
{
    // interned: nbdkit frees it with the connection
    return nbdkit_strdup_intern(description(*static_cast<ArchiveImage *>(handle)).c_str());
}

int64_t vma_get_size(void *handle)
{
    return static_cast<int64_t>(static_cast<ArchiveImage *>(handle)->size());
}

int vma_can_write(void *) { return 0; }
int vma_can_multi_conn(void *) { return 1; }
int vma_can_extents(void *) { return 1; }
int vma_is_rotational(void *) { return 0; }

int vma_pread(void *handle, void *buf, uint32_t count, uint64_t offset, uint32_t)
{
    return guarded([&] {
        static_cast<ArchiveImage *>(handle)->read(buf, count, offset);
        return 0;
    });
}

int vma_extents(void *handle, uint32_t count, uint64_t offset, uint32_t flags,
                struct nbdkit_extents *extents)
{
    return guarded([&] {
        bool failed = false;
        const bool one = flags & NBDKIT_FLAG_REQ_ONE;
        static_cast<ArchiveImage *>(handle)->map(
            offset, count, [&](std::uint64_t at, std::uint64_t len, bool zero) {
                if (nbdkit_add_extent(extents, at, len,
                                      zero ? NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO : 0) < 0)
                    failed = true;
                return !failed && !one;
            });
        return failed ? -1 : 0;
    });
}

struct nbdkit_plugin make_plugin()
{
    struct nbdkit_plugin p = {};
    p.name = "vma";
    p.longname = "nbdkit VMA (Proxmox backup archive) plugin";
    p.version = ENGINE_VERSION;
    p.description = "Serves each device of a VMA archive read-only, without restoring it";
    p.unload = vma_unload;
    p.config = vma_config;
    p.config_complete = vma_config_complete;
    p.config_help = "[archive=]ARCHIVE  The .vma archive (also .vma.zst, .vma.gz, .vma.lzo).\n"
                    "dev=NAME           The device served as the default export.";
    p.magic_config_key = "archive";
    p.get_ready = vma_get_ready;
    p.list_exports = vma_list_exports;
    p.default_export = vma_default_export;
    p.open = vma_open;
    p.export_description = vma_export_description;
    p.get_size = vma_get_size;
    p.can_write = vma_can_write;
    p.can_multi_conn = vma_can_multi_conn;
    p.can_extents = vma_can_extents;
    p.is_rotational = vma_is_rotational;
    p.pread = vma_pread;
    p.extents = vma_extents;
    return p;
}

struct nbdkit_plugin plugin = make_plugin();

} // namespace

NBDKIT_REGISTER_PLUGIN(plugin)
