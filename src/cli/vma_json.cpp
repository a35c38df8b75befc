#include "cli/vma_json.h"

#include "util/error.h"
#include "util/uuid.h"

#include <cstdio>
#include <ctime>

namespace vma_cli {

namespace {

using engine::Json;

Json unsigned_json(std::uint64_t value)
{
    // json-c integers are int64; archive figures stay far below 2^63
    return Json::integer(static_cast<std::int64_t>(value));
}

Json iso8601_utc(std::int64_t epoch)
{
    std::time_t time = static_cast<std::time_t>(epoch);
    std::tm tm;
    char text[40];
    if (!gmtime_r(&time, &tm) || !std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm))
        return Json();
    return Json::string(text);
}

} // namespace

const struct option kOutputFormatOption[] = {
    {"output-format", required_argument, nullptr, 'o'},
    {nullptr, 0, nullptr, 0},
};

OutputFormat parse_output_format(const char *value)
{
    std::string text = value;
    if (text == "text")
        return OutputFormat::Text;
    if (text == "json")
        return OutputFormat::Json;
    if (text == "json-pretty")
        return OutputFormat::JsonPretty;
    throw engine::Error("invalid output format '" + text + "' (json, json-pretty or text)");
}

Json archive_json(const engine::vma::Reader &reader)
{
    Json archive = Json::object();
    archive.set("uuid", Json::string(engine::uuid_to_string(reader.uuid())));
    archive.set("ctime", Json::integer(reader.ctime()));
    archive.set("ctime_iso8601", iso8601_utc(reader.ctime()));
    Json configs = Json::array();
    for (const auto &config : reader.configs()) {
        Json entry = Json::object();
        entry.set("name", Json::string(config.name));
        entry.set("size", unsigned_json(config.data.size()));
        configs.append(entry);
    }
    archive.set("configs", configs);
    Json devices = Json::array();
    for (const auto &dev : reader.devices()) {
        Json entry = Json::object();
        entry.set("id", Json::integer(dev.id));
        entry.set("name", Json::string(dev.name));
        entry.set("size", unsigned_json(dev.size));
        entry.set("vmstate", Json::boolean(dev.vmstate));
        devices.append(entry);
    }
    archive.set("devices", devices);
    return archive;
}

Json verify_json(const VerifyOutcome &outcome)
{
    Json result = outcome.reader ? archive_json(*outcome.reader) : Json::object();
    result.set("result", Json::string(outcome.error ? "error" : "ok"));
    if (outcome.error) {
        Json error = Json::object();
        error.set("message", Json::string(*outcome.error));
        error.set("offset", outcome.error_offset ? unsigned_json(*outcome.error_offset) : Json());
        result.set("error", error);
    }
    if (outcome.stats) {
        // the figures `verify -v` prints, as numbers
        const auto &stats = *outcome.stats;
        result.set("clusters", unsigned_json(stats.clusters));
        result.set("bytes_read", unsigned_json(stats.bytes));
        result.set("sparse_bytes", unsigned_json(stats.zero_bytes));
        result.set("sparse_percent",
                   Json::number(stats.bytes ? 100.0 * double(stats.zero_bytes) / double(stats.bytes) : 0.0));
        result.set("zero_block_bytes", unsigned_json(stats.partial_zero_bytes));
        std::uint64_t data = stats.bytes - stats.zero_bytes;
        result.set("zero_block_percent",
                   data ? Json::number(100.0 * double(stats.partial_zero_bytes) / double(data)) : Json());
    }
    return result;
}

void print_json(const Json &value, OutputFormat format)
{
    int flags = JSON_C_TO_STRING_NOSLASHESCAPE |
                (format == OutputFormat::JsonPretty ? JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED
                                                    : JSON_C_TO_STRING_PLAIN);
    std::fputs(json_object_to_json_string_ext(value.get(), flags), stdout);
    std::fputc('\n', stdout);
    if (std::fflush(stdout) != 0 || std::ferror(stdout))
        throw engine::Error("write to stdout failed");
}

} // namespace vma_cli
