// The Restorer's progress hooks: the per-extent tick that drives vma's
// terminal progress line and the whole-percent callback of -v.
#include "vma_test_support.h"

#include "util/fd.h"
#include "vma/reader.h"
#include "vma/restore.h"

#include "catch2_compat.h"

#include <algorithm>
#include <functional>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

using namespace vma_test;
namespace vma = engine::vma;

namespace {

} // namespace

TEST_CASE("the restorer ticks after every extent and reports whole percents", "[vma]")
{
    Bytes disk = random_bytes(9 * 1024 * 1024 + 4096, 7);
    Bytes zeros(3 * 1024 * 1024, 0);
    Bytes archive = write_archive({{"drive-scsi0", disk}, {"drive-scsi1", zeros}});
    std::size_t extents = extent_offsets(archive).size();
    REQUIRE(extents > 3);

    vma::Reader reader(memory_file(archive));
    vma::Restorer restorer(reader);
    CHECK(restorer.total_bytes() == disk.size() + zeros.size());
    std::vector<std::uint64_t> ticks;
    std::vector<unsigned> percents;
    restorer.set_tick([&](std::uint64_t bytes) { ticks.push_back(bytes); });
    restorer.set_progress([&](unsigned percent, std::uint64_t) { percents.push_back(percent); });
    restorer.run(reader);

    CHECK(ticks.size() == extents);
    CHECK(std::is_sorted(ticks.begin(), ticks.end()));
    CHECK(ticks.front() > 0);
    CHECK(ticks.back() == restorer.stats().bytes);
    CHECK(ticks.back() == restorer.total_bytes());
    REQUIRE(!percents.empty());
    CHECK(std::adjacent_find(percents.begin(), percents.end(), std::greater_equal<>()) == percents.end());
    CHECK(percents.back() == 100);
}

TEST_CASE("the restorer's tick stops with a damaged extent", "[vma]")
{
    Bytes archive = write_archive({{"drive-scsi0", random_bytes(8 * 1024 * 1024, 3)}});
    auto offsets = extent_offsets(archive);
    REQUIRE(offsets.size() > 2);
    archive[offsets[2] + 100] ^= 0xff; // inside the header: checksum mismatch

    vma::Reader reader(memory_file(archive));
    vma::Restorer restorer(reader);
    std::vector<std::uint64_t> ticks;
    restorer.set_tick([&](std::uint64_t bytes) { ticks.push_back(bytes); });
    CHECK_THROWS_AS(restorer.run(reader), vma::FormatError);
    CHECK(ticks.size() == 2);
    CHECK(ticks.back() == restorer.stats().bytes);
    CHECK(ticks.back() < restorer.total_bytes());
}
