// vma verify --output-format json|json-pretty: the same check as the text
// mode, with the outcome (a failure included) printed as one JSON object.
#include "cli/vma_json.h"

#include "cli/progress.h"

#include "util/error.h"

#include <memory>
#include <optional>

namespace vma_cli {

int verify_as_json(const std::string &path, OutputFormat format)
{
    namespace vma = engine::vma;
    VerifyOutcome outcome;
    std::unique_ptr<vma::Reader> reader;
    std::optional<vma::Restorer> restorer;
    // the text mode's wording: header errors bare, later ones prefixed
    std::string failure;
    try {
        reader = vma::Reader::open(path);
        outcome.reader = reader.get();
        restorer.emplace(*reader);
        outcome.stats = &restorer->stats();
        TerminalProgress line("verify", false);
        restorer->set_tick([&](std::uint64_t bytes) { line.update(bytes, restorer->total_bytes()); });
        restorer->run(*reader);
        line.finish();
    } catch (const vma::FormatError &e) {
        outcome.error = e.reason();
        outcome.error_offset = e.offset();
        failure = e.what();
    } catch (const engine::Error &e) {
        outcome.error = e.what();
        failure = e.what();
    }
    print_json(verify_json(outcome), format);
    if (!outcome.error)
        return 0;
    throw engine::Error(outcome.stats ? "verify failed - " + failure : failure);
}

} // namespace vma_cli
