// libFuzzer target for the VMA reader: any input must be accepted or
// rejected with an engine::Error, never crash, leak or read out of bounds.
// Built and run by `make fuzz-vma` (clang, -fsanitize=fuzzer,address,undefined).
#include "util/endian.h"
#include "util/error.h"
#include "util/fd.h"
#include "util/md5.h"
#include "vma/reader.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>
#include <sys/mman.h>
#include <unistd.h>

namespace {

// Touches every byte handed out, so ASan sees any out-of-bounds block.
class TouchingSink : public engine::vma::ClusterSink {
public:
    unsigned sum = 0;
    void cluster(const engine::vma::DeviceInfo &dev, std::uint32_t, std::uint16_t mask,
                 const std::uint8_t *blocks) override
    {
        sum += dev.id;
        std::size_t bytes = static_cast<std::size_t>(__builtin_popcount(mask)) * engine::vma::kBlockSize;
        for (std::size_t i = 0; i < bytes; i += 512)
            sum += blocks[i] + blocks[bytes - 1];
    }
};

// Mutations rarely keep an MD5 valid; for inputs whose last byte is odd the
// checksums are recomputed, so the checks behind them get fuzzed too.
void fix_checksums(std::vector<std::uint8_t> &a)
{
    namespace vma = engine::vma;
    if (a.size() < vma::kHeaderFixedSize)
        return;
    std::size_t header_size = engine::load_be32(&a[vma::header::kHeaderSizeOffset]);
    if (header_size <= a.size()) {
        std::memset(&a[vma::header::kMd5Offset], 0, 16);
        auto digest = engine::md5(a.data(), header_size);
        std::memcpy(&a[vma::header::kMd5Offset], digest.data(), 16);
    }
    for (std::size_t at = header_size; at + vma::kExtentHeaderSize <= a.size();) {
        std::memset(&a[at + vma::extent::kMd5Offset], 0, 16);
        auto digest = engine::md5(&a[at], vma::kExtentHeaderSize);
        std::memcpy(&a[at + vma::extent::kMd5Offset], digest.data(), 16);
        at += vma::kExtentHeaderSize +
              std::size_t(engine::load_be16(&a[at + vma::extent::kBlockCountOffset])) * vma::kBlockSize;
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
    engine::Fd mem(memfd_create("vma-fuzz", MFD_CLOEXEC));
    if (!mem)
        return 0;
    std::vector<std::uint8_t> input(data, data + size);
    if (size && (data[size - 1] & 1))
        fix_checksums(input);
    try {
        engine::write_all(mem.get(), input.data(), input.size(), "memfd");
        lseek(mem.get(), 0, SEEK_SET);
        engine::vma::Reader reader(std::move(mem));
        TouchingSink sink;
        reader.read_extents(sink);
    } catch (const engine::Error &) {
    }
    return 0;
}
