// The image a copy-before-write filter saves old data into: either a sparse
// raw file the engine creates in a directory (and removes again), or an image
// the caller allocated (e.g. on PVE's fleecing storage) and removes itself.
#pragma once

#include <cstdint>
#include <string>

namespace engine::upstream {

class FleecingImage {
public:
    // Creates path (must not exist) as a sparse raw file of size bytes.
    // Throws Error("unable to create fleecing image '<path>' - ...").
    static FleecingImage create_temp(const std::string &path, std::uint64_t size);
    // Uses an existing image of the given QEMU format ("raw", "qcow2").
    static FleecingImage existing(std::string path, std::string format);

    FleecingImage(FleecingImage &&other) noexcept;
    FleecingImage &operator=(FleecingImage &&) = delete;
    FleecingImage(const FleecingImage &) = delete;
    // Removes a temp image (a failure to remove is ignored: nothing to do).
    ~FleecingImage();

    const std::string &path() const { return path_; }
    const std::string &format() const { return format_; }

private:
    FleecingImage(std::string path, std::string format, bool owned)
        : path_(std::move(path)), format_(std::move(format)), owned_(owned)
    {
    }

    std::string path_;
    std::string format_;
    bool owned_;
};

} // namespace engine::upstream
