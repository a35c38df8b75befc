#include "vma/restore_map.h"

#include "util/error.h"

#include <cerrno>
#include <cstdio>
#include <memory>

namespace engine::vma {

namespace {

// Takes "NAME=VALUE:" off the front of rest if it starts with NAME=.
bool take_option(std::string &rest, const std::string &name, std::optional<std::string> &out,
                 const std::string &line)
{
    if (rest.compare(0, name.size(), name) != 0 || rest.size() <= name.size() ||
        rest[name.size()] != '=')
        return false;
    if (out)
        throw Error("read map failed - duplicate value for option '" + name + "'");
    auto colon = rest.find(':', name.size() + 1);
    if (colon == std::string::npos)
        throw Error("read map failed - option '" + name + "' not terminated ('" + line + "')");
    out = rest.substr(name.size() + 1, colon - name.size() - 1);
    rest.erase(0, colon + 1);
    return true;
}

std::uint64_t parse_u64(const std::string &text)
{
    // base 0 as qemu_strtou64: decimal, 0x hex or 0 octal; no sign, no junk
    if (text.empty() || text[0] == '-' || text[0] == '+' || text[0] == ' ')
        throw Error("read map failed - not a number: " + text);
    errno = 0;
    char *end = nullptr;
    unsigned long long value = std::strtoull(text.c_str(), &end, 0);
    if (errno != 0 || !end || *end)
        throw Error("read map failed - not a number: " + text);
    return value;
}

} // namespace

MapEntry parse_map_line(const std::string &line)
{
    MapEntry entry;
    std::string rest = line;
    std::optional<std::string> bps;
    while (take_option(rest, "format", entry.format, line) ||
           take_option(rest, "throttling.bps", bps, line) ||
           take_option(rest, "throttling.group", entry.throttling_group, line) ||
           take_option(rest, "cache", entry.cache, line)) {
    }
    if (bps)
        entry.throttling_bps = parse_u64(*bps);
    if (rest.size() < 2 || rest[1] != ':' || (rest[0] != '0' && rest[0] != '1'))
        throw Error("read map failed - parse error ('" + line + "')");
    entry.write_zero = rest[0] == '1';
    rest.erase(0, 2);
    auto eq = rest.find('=');
    if (eq == std::string::npos)
        throw Error("read map failed - no dev name specified ('" + line + "')");
    entry.devname = rest.substr(0, eq);
    entry.path = rest.substr(eq + 1);
    return entry;
}

std::map<std::string, MapEntry> read_restore_map(const std::string &path)
{
    std::unique_ptr<FILE, int (*)(FILE *)> file(std::fopen(path.c_str(), "re"), &std::fclose);
    if (!file)
        throw_errno("unable to open fifo " + path);
    std::map<std::string, MapEntry> map;
    char *buf = nullptr;
    std::size_t cap = 0;
    struct LineBuffer {
        char *&p;
        ~LineBuffer() { std::free(p); }
    } line_buffer{buf};
    for (;;) {
        ssize_t n = getline(&buf, &cap, file.get());
        if (n <= 0)
            break;
        std::string line(buf, static_cast<std::size_t>(n));
        if (line.back() == '\n')
            line.pop_back();
        if (line.empty() || line == "done")
            break;
        MapEntry entry = parse_map_line(line);
        map[entry.devname] = std::move(entry);
    }
    if (std::ferror(file.get()))
        throw_errno("read map failed - read error on " + path);
    return map;
}

} // namespace engine::vma
