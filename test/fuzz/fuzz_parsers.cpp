// libFuzzer target for everything that reads untrusted text before any table
// is touched: the token parser, base62, the scope parser and matcher, the
// scope suggestion, the fixed-size field copy, and a spool batch file (what
// a standby reads back from disk). Built by CMake with
// -DFLINT_FUZZ=ON (clang, -fsanitize=fuzzer,address,undefined): the target
// fuzz_parsers, run by test/run_tests.sh fuzz.
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "base62.hpp"
#include "log_record.hpp"
#include "scopes.hpp"
#include "spool_batch.hpp"
#include "usage_rollup.hpp"
#include "token.hpp"

using namespace flint;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    std::string_view text(reinterpret_cast<const char *>(data), size);

    ParsedToken parsed;
    ParseError error = parse_token(text, parsed);
    if (error == ParseError::none) {
        // Whatever parses has the documented shape.
        if (text.size() != token_layout::kTokenLen ||
            (text.substr(0, 8) != "fk_live_" && text.substr(0, 8) != "fk_test_"))
            __builtin_trap();
        if (display_prefix(text).size() != token_layout::kDisplayPrefixLen)
            __builtin_trap();
    }

    uint8_t bytes[24];
    for (size_t n : {4, 16, 24})
        if (base62::decode(text.substr(0, 40), bytes, n)) {
            std::string again = base62::encode(bytes, n);
            // A decoded value re-encodes to the same digits, left-padded with zeros.
            std::string_view digits = text.substr(0, 40);
            if (digits.size() <= again.size() &&
                again.compare(again.size() - digits.size(), digits.size(), digits) != 0)
                __builtin_trap();
        }

    ScopeName scope;
    if (parse_scope(text, scope) && (scope.resource.empty() || scope.action.empty()))
        __builtin_trap();
    const std::vector<std::string> catalog = {"payments:read", "payments:write", "refunds:read", "keys:write"};
    std::vector<std::string> held = {std::string(text), "refunds:*"};
    (void)scope_grants(held, "payments:read");
    (void)scope_grants(catalog, text);
    (void)scopes_cover(held, text);
    (void)scope_in_catalog(catalog, text);
    std::string near = closest_scope(catalog, text);
    if (!near.empty() && edit_distance(near, text) > 3)
        __builtin_trap();

    char field[16];
    copy_field(field, reinterpret_cast<const char *>(data), size);
    if (std::strlen(field) >= sizeof field)
        __builtin_trap();

    // A spool file: anything but a whole, checksummed batch is refused; what
    // is accepted re-encodes to the same bytes.
    SpoolBatch batch;
    if (decode_spool_batch(reinterpret_cast<const char *>(data), size, &batch) == SpoolRead::ok) {
        std::string again =
            encode_spool_batch(batch.origin, batch.batch_id, batch.server, batch.rows.data(), batch.rows.size());
        if (again.size() != size)
            __builtin_trap();
    }

    // A COPY batch (forwarded by a standby): refused, or summed into groups
    // that count at least one request each.
    UsageRollup rollup;
    if (rollup.add_copy_binary(text, true))
        for (const UsageGroup &g : rollup.groups())
            if (g.requests < 1)
                __builtin_trap();
    return 0;
}
