#include "upstream/fleecing_image.h"

#include "util/error.h"
#include "util/fd.h"

#include <fcntl.h>
#include <unistd.h>

#include <utility>

namespace engine::upstream {

FleecingImage FleecingImage::create_temp(const std::string &path, std::uint64_t size)
{
    Fd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd)
        throw_errno("unable to create fleecing image '" + path + "'");
    FleecingImage image(path, "raw", true);
    if (ftruncate(fd.get(), static_cast<off_t>(size)) < 0)
        throw_errno("unable to create fleecing image '" + path + "'");
    fd.close_checked(("unable to create fleecing image '" + path + "'").c_str());
    return image;
}

FleecingImage FleecingImage::existing(std::string path, std::string format)
{
    return FleecingImage(std::move(path), std::move(format), false);
}

FleecingImage::FleecingImage(FleecingImage &&other) noexcept
    : path_(std::move(other.path_)), format_(std::move(other.format_)), owned_(std::exchange(other.owned_, false))
{
}

FleecingImage::~FleecingImage()
{
    if (owned_)
        unlink(path_.c_str());
}

} // namespace engine::upstream
