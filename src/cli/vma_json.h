// `vma list` and `vma verify` output for scripts: --output-format
// json|json-pretty|text, as Proxmox's own CLIs spell it (text, the default,
// is the classic output). The schema is documented in doc/vma.pod and kept
// stable: fields may be added, none renamed or removed.
#pragma once

#include "util/json.h"
#include "vma/reader.h"
#include "vma/restore.h"

#include <getopt.h>
#include <optional>
#include <string>

namespace vma_cli {

enum class OutputFormat { Text, Json, JsonPretty };

// The long option both commands take (getopt_long returns 'o' for it).
extern const struct option kOutputFormatOption[];

// Parses the option's value; throws engine::Error on anything else.
OutputFormat parse_output_format(const char *value);

// The archive's header: uuid, ctime (epoch and ISO 8601 UTC), configs
// (name, size) and devices (id, name, size, vmstate).
engine::Json archive_json(const engine::vma::Reader &reader);

// What verify found: the header fields when the header could be read
// (reader non-null), the statistics when the extents were read (stats
// non-null), result "ok" or "error" with the error's message and archive
// offset (null for a failure that is not a format error).
struct VerifyOutcome {
    const engine::vma::Reader *reader = nullptr;
    const engine::vma::RestoreStats *stats = nullptr;
    std::optional<std::string> error;
    std::optional<std::uint64_t> error_offset;
};
engine::Json verify_json(const VerifyOutcome &outcome);

// Writes value to stdout as one line (Json) or indented (JsonPretty), with a
// final newline; throws engine::Error if stdout fails.
void print_json(const engine::Json &value, OutputFormat format);

// vma verify with JSON output: checks the archive at path, prints the
// outcome (a failure too), then returns 0 or throws the error text verify
// reports in text mode. A progress line is shown as in text mode.
int verify_as_json(const std::string &path, OutputFormat format);

} // namespace vma_cli
