#include "temp_dir.h"

#include "util/error.h"

#include <cstdlib>
#include <filesystem>

namespace engine_test {

TempDir::TempDir()
{
    std::string pattern = (std::filesystem::temp_directory_path() / "engine-test.XXXXXX").string();
    if (!::mkdtemp(pattern.data()))
        engine::throw_errno("mkdtemp " + pattern);
    path_ = pattern;
}

TempDir::~TempDir()
{
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
}

} // namespace engine_test
