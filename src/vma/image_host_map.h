// Where a qcow2 image keeps its virtual disk inside its own file, as QEMU
// itself reports it (qemu-img info and qemu-img map), so that vma can read
// and write the data of allocated clusters with plain pread/pwrite on the
// file, at the speed of a raw image, and leave the rest to QEMU's block layer
// (qemu-nbd): allocating clusters, zero clusters, compressed or encrypted
// data, and data from a backing file.
//
// A map is only offered where writing the mapped bytes of the file is exactly
// what QEMU would do: a qcow2 image (probed or given) in a plain file or
// block device, whose data lives in that file (no external data file, no
// encryption) and is not corrupt. For writing, also no internal snapshot
// (a cluster it shares needs QEMU's copy-on-write) and no persistent dirty
// bitmap (QEMU would have to record the write in it).
//
// Memory is bounded: at most kMaxRuns runs are kept; the disk past them is
// left to QEMU, which is always correct, only slower.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace engine::vma {

class ImageHostMap {
public:
    enum class Access { Read, Write };
    enum class Kind {
        Qemu, // go through QEMU
        File, // the bytes are in the image file at host offset
        Zero, // reads as zeros (Access::Read only)
    };
    struct Run {
        std::uint64_t start;
        std::uint64_t length;
        Kind kind;
        std::uint64_t host; // File: where start lies in the image file
    };

    static constexpr std::size_t kMaxRuns = 1 << 18; // 8 MiB of runs

    // The map of path for access, or nullopt where there is none to use
    // (another format, an image QEMU cannot open, qemu-img missing): the
    // caller then goes through QEMU alone, which reports any real error.
    // max_runs is for tests of the bound.
    static std::optional<ImageHostMap> load(const std::string &path, const std::optional<std::string> &format,
                                            Access access, std::size_t max_runs = kMaxRuns);

    std::uint64_t virtual_size() const { return virtual_size_; }
    // Whether any part of the disk is in the file (else the map gains nothing).
    bool has_file_runs() const { return has_file_runs_; }
    // Whether any part of the disk is QEMU's.
    bool has_qemu_runs() const { return covered_ < virtual_size_; }

    // The run holding offset (< virtual_size()): from offset to the run's
    // end at most, the whole range has the run's kind.
    Run run_at(std::uint64_t offset) const;

private:
    ImageHostMap() = default;
    void add(Run run);

    std::uint64_t virtual_size_ = 0;
    bool has_file_runs_ = false;
    std::uint64_t covered_ = 0; // bytes in runs_
    std::size_t max_runs_ = kMaxRuns;
    bool full_ = false; // max_runs_ reached
    // File and Zero runs in order, not overlapping; the gaps are Qemu
    std::vector<Run> runs_;
};

} // namespace engine::vma
