#include "vma/image_host_map.h"

#include "util/command.h"
#include "util/error.h"
#include "util/json.h"
#include "vma/image_format_probe.h"

#include <algorithm>
#include <sys/stat.h>

namespace engine::vma {

namespace {

std::vector<std::string> qemu_img(const char *command, const std::string &path,
                                  const std::optional<std::string> &format)
{
    std::vector<std::string> argv = {"qemu-img", command, "--output=json"};
    if (format) {
        argv.push_back("-f");
        argv.push_back(*format);
    }
    argv.push_back(path);
    return argv;
}

bool nonempty_array(const Json &value)
{
    return value.is_array() && value.size() > 0;
}

// Whether QEMU's description of the image (qemu-img info) allows access to
// the mapped bytes of its file without QEMU; see the header.
bool allows(const Json &info, ImageHostMap::Access access)
{
    if (info.member("format").as_string() != "qcow2")
        return false;
    Json data = info.member("format-specific").member("data");
    if (!data.is_object() || data.has("data-file") || data.has("encrypt") ||
        (data.has("corrupt") && data.member("corrupt").as_boolean()))
        return false;
    if (access == ImageHostMap::Access::Read)
        return true;
    return !nonempty_array(info.member("snapshots")) && !nonempty_array(data.member("bitmaps")) &&
           !(info.has("dirty-flag") && info.member("dirty-flag").as_boolean());
}

// One line of `qemu-img map --output=json`: an object of the one array,
// framed by "[" before the first and "," or "]" after each.
Json parse_map_line(std::string_view line)
{
    auto strip = [&](std::string_view chars) {
        while (!line.empty() && chars.find(line.front()) != std::string_view::npos)
            line.remove_prefix(1);
        while (!line.empty() && chars.find(line.back()) != std::string_view::npos)
            line.remove_suffix(1);
    };
    strip(" \t\r");
    if (line.starts_with('['))
        line.remove_prefix(1);
    if (line.ends_with(',') || line.ends_with(']'))
        line.remove_suffix(1);
    strip(" \t\r");
    return line.empty() ? Json() : Json::parse(line);
}

ImageHostMap::Kind kind_of(const Json &entry, ImageHostMap::Access access)
{
    bool in_file = entry.member("depth").as_integer() == 0 && entry.member("data").as_boolean() &&
                   entry.has("offset");
    if (access == ImageHostMap::Access::Write)
        return in_file ? ImageHostMap::Kind::File : ImageHostMap::Kind::Qemu;
    if (entry.member("zero").as_boolean() || !entry.member("present").as_boolean())
        return ImageHostMap::Kind::Zero;
    return in_file ? ImageHostMap::Kind::File : ImageHostMap::Kind::Qemu;
}

} // namespace

std::optional<ImageHostMap> ImageHostMap::load(const std::string &path, const std::optional<std::string> &format,
                                               Access access, std::size_t max_runs)
{
    struct stat st;
    if (has_protocol_prefix(path) || stat(path.c_str(), &st) < 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)))
        return std::nullopt;
    try {
        std::string info_text;
        run_command(qemu_img("info", path, format), [&](std::string_view line) {
            info_text.append(line);
            info_text += '\n';
        });
        Json info = Json::parse(info_text);
        if (!allows(info, access))
            return std::nullopt;

        ImageHostMap map;
        map.max_runs_ = max_runs;
        map.virtual_size_ = static_cast<std::uint64_t>(info.member("virtual-size").as_integer());
        // the map of the format info found, even if the file changed since
        run_command(qemu_img("map", path, std::string("qcow2")), [&](std::string_view line) {
            Json entry = parse_map_line(line);
            if (entry.is_null())
                return;
            map.add(Run{static_cast<std::uint64_t>(entry.member("start").as_integer()),
                        static_cast<std::uint64_t>(entry.member("length").as_integer()),
                        kind_of(entry, access), static_cast<std::uint64_t>(entry.member("offset").as_integer())});
        });
        if (!map.has_file_runs_)
            return std::nullopt;
        return map;
    } catch (const std::runtime_error &) { // Error or JsonError
        return std::nullopt;
    }
}

void ImageHostMap::add(Run run)
{
    if (full_ || run.kind == Kind::Qemu || run.length == 0 || run.start >= virtual_size_)
        return;
    run.length = std::min(run.length, virtual_size_ - run.start);
    if (!runs_.empty()) {
        Run &last = runs_.back();
        if (run.start < last.start + last.length)
            throw Error("qemu-img map: runs out of order");
        if (last.kind == run.kind && last.start + last.length == run.start &&
            (run.kind == Kind::Zero || last.host + last.length == run.host)) {
            last.length += run.length;
            covered_ += run.length;
            return;
        }
    }
    if (runs_.size() == max_runs_) {
        full_ = true; // the rest of the disk goes through QEMU
        return;
    }
    runs_.push_back(run);
    covered_ += run.length;
    has_file_runs_ = has_file_runs_ || run.kind == Kind::File;
}

ImageHostMap::Run ImageHostMap::run_at(std::uint64_t offset) const
{
    auto next = std::upper_bound(runs_.begin(), runs_.end(), offset,
                                 [](std::uint64_t value, const Run &run) { return value < run.start; });
    if (next != runs_.begin()) {
        const Run &run = *(next - 1);
        if (offset < run.start + run.length)
            return run;
    }
    std::uint64_t end = next == runs_.end() ? virtual_size_ : next->start;
    return Run{offset, end - offset, Kind::Qemu, 0};
}

} // namespace engine::vma
