// Finding and masking flint tokens in text bound for the server log.
// Postgres-free; used by the emit_log_hook.
#pragma once
#include <cstddef>

namespace flint {

// True when `text` holds "fk_live_" or "fk_test_" followed by base62
// characters, or a token's body (61 base62 characters whose checksum, after
// either prefix, is right) with any prefix or none.
bool contains_token(const char *text);

// Masks, in place, every token's body wherever it stands (its secret and
// checksum; the first 8 key-id characters stay), and every base62 character
// after the first 16 of each "fk_live_"/"fk_test_" run (the display prefix
// stays, for support): a token, a truncated one or one with a typo alike.
// Returns how many it masked. Text with neither is not written to.
size_t scrub_tokens(char *text);

// Masks, in place, every run of at least kMinFragment base62 characters of
// `text` that is part of a token in `source` (past its display prefix): a
// piece of secret quoted without its prefix or checksum, as a parser's
// CONTEXT line quotes only the tail of a long input. `source` is the
// statement that raised the message. Returns how many runs it masked.
inline constexpr size_t kMinFragment = 8;
size_t scrub_fragments(char *text, const char *source);

} // namespace flint
