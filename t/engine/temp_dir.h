// A private temporary directory for one test, shared by all engine tests.
#pragma once

#include <string>

namespace engine_test {

// A fresh directory under $TMPDIR, removed with its contents on destruction.
class TempDir {
  public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir &) = delete;
    TempDir &operator=(const TempDir &) = delete;
    const std::string &path() const { return path_; }
    // The path of `name` inside the directory; `dir / name` says the same.
    std::string file(const std::string &name) const { return path_ + "/" + name; }
    std::string operator/(const std::string &name) const { return file(name); }

  private:
    std::string path_;
};

} // namespace engine_test
