#include "vma/archive_index.h"

#include "util/error.h"
#include "util/temp_file.h"

#include <algorithm>
#include <array>
#include <cstring>

namespace engine::vma {

namespace {

constexpr std::size_t kEntrySize = 8;
constexpr std::size_t kPageEntries = 4096 / kEntrySize;

} // namespace

// Receives the checked clusters and writes their entries; one cached page of
// the index file, so an archive in device order costs one pwrite per 512
// clusters and an interleaved or backwards one a pread and pwrite more per
// switch between pages.
class ArchiveIndex::Builder : public ClusterSink {
public:
    Builder(ArchiveIndex &index, const Reader &reader) : index_(index), reader_(reader)
    {
        for (const auto &dev : index_.devices_)
            slot_[dev.info.id] = &dev - index_.devices_.data();
    }

    void cluster(const DeviceInfo &dev, std::uint32_t cluster, std::uint16_t mask,
                 const std::uint8_t *) override
    {
        IndexedDevice &indexed = index_.devices_[slot_[dev.id]];
        if (dev.vmstate) // in order (the reader checks), so the count so far
            indexed.clusters = std::uint64_t(cluster) + 1;
        std::uint64_t offset = reader_.cluster_offset();
        if (offset > kMaxArchiveOffset)
            throw Error("archive too large to index (offset " + std::to_string(offset) + ")");
        std::uint64_t entry = indexed.first_entry + cluster;
        switch_to_page(entry / kPageEntries);
        page_[entry % kPageEntries] = offset << 16 | mask;
        dirty_ = true;
    }

    bool wants_data() const override { return false; }

    void finish() { flush(); }

private:
    void switch_to_page(std::uint64_t page)
    {
        if (page == page_number_)
            return;
        flush();
        page_number_ = page;
        page_.fill(0);
        // a page never written is a hole and reads as zeros (or short)
        pread_full(index_.file_.get(), page_.data(), sizeof page_, page * sizeof page_,
                   "can't read the archive index");
    }

    void flush()
    {
        if (!dirty_)
            return;
        pwrite_all(index_.file_.get(), page_.data(), sizeof page_, page_number_ * sizeof page_,
                   "can't write the archive index");
        dirty_ = false;
    }

    ArchiveIndex &index_;
    const Reader &reader_;
    std::size_t slot_[kDeviceSlots] = {};
    std::array<std::uint64_t, kPageEntries> page_{};
    std::uint64_t page_number_ = 0;
    bool dirty_ = false;
};

ArchiveIndex::ArchiveIndex(Reader &reader, const std::string &temp_dir)
    : file_(unlinked_temp_file(temp_dir))
{
    std::uint64_t entries = 0;
    for (const auto &dev : reader.devices()) {
        if (dev.vmstate)
            continue;
        devices_.push_back({dev, dev.size, dev.clusters(), entries});
        entries += dev.clusters();
    }
    // vmstate's cluster count shows only at the end: its entries go last
    for (const auto &dev : reader.devices())
        if (dev.vmstate)
            devices_.push_back({dev, 0, 0, entries});

    Builder builder(*this, reader);
    reader.read_extents(builder);
    builder.finish();

    for (auto &dev : devices_)
        if (dev.info.vmstate)
            dev.size = dev.clusters * kClusterSize;
    // devices in id order, as the reader lists them
    std::sort(devices_.begin(), devices_.end(),
              [](const IndexedDevice &a, const IndexedDevice &b) { return a.info.id < b.info.id; });
}

void ArchiveIndex::entries(const IndexedDevice &dev, std::uint64_t first, std::size_t count,
                           ClusterEntry *out) const
{
    constexpr std::size_t kBatch = 512;
    std::uint64_t raw[kBatch];
    while (count) {
        std::size_t n = std::min(count, kBatch);
        std::size_t bytes = n * kEntrySize;
        std::size_t got = pread_full(file_.get(), raw, bytes, (dev.first_entry + first) * kEntrySize,
                                     "can't read the archive index");
        // the file ends at its last written page: entries past it are zero
        std::memset(reinterpret_cast<std::uint8_t *>(raw) + got, 0, bytes - got);
        for (std::size_t i = 0; i < n; i++)
            out[i] = {raw[i] >> 16, static_cast<std::uint16_t>(raw[i])};
        out += n;
        first += n;
        count -= n;
    }
}

} // namespace engine::vma
