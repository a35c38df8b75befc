#include "vma/device_source.h"

#include "vma/image_format_probe.h"
#include "vma/image_host_map.h"
#include "vma/image_source.h"
#include "vma/mapped_image_source.h"
#include "vma/qemu_image_source.h"

namespace engine::vma {

namespace {

class DirectSource final : public DeviceSource {
public:
    explicit DirectSource(const std::string &path) : image_(path) {}
    std::uint64_t size() const override { return image_.size(); }
    void write_to(Writer &writer, DeviceId dev, const std::function<void()> &progress) override
    {
        write_image(writer, dev, image_, progress);
    }

private:
    ImageSource image_;
};

// An image file in another format: read from the file where QEMU says the
// data is, through QEMU where it does not.
std::unique_ptr<DeviceSource> open_image_file(const std::string &path, const std::optional<std::string> &format)
{
    if (auto map = ImageHostMap::load(path, format, ImageHostMap::Access::Read))
        return std::make_unique<MappedImageSource>(path, std::move(*map));
    return std::make_unique<QemuImageSource>(path, format);
}

} // namespace

std::unique_ptr<DeviceSource> open_device_source(const std::string &path,
                                                 const std::optional<std::string> &format)
{
    if (has_protocol_prefix(path))
        return std::make_unique<QemuImageSource>(path, format);
    if (format) {
        if (*format != "raw")
            return open_image_file(path, format);
    } else {
        // unreadable: the direct open says why
        std::optional<std::string> probed = probe_image_format(path);
        if (probed && *probed != "raw")
            return open_image_file(path, std::nullopt);
    }
    return std::make_unique<DirectSource>(path);
}

} // namespace engine::vma
