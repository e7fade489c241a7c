// Finding and masking flint tokens in text bound for the server log.
// Postgres-free; used by the emit_log_hook.
#pragma once
#include <cstddef>

namespace flint {

// True when `text` holds "fk_live_" or "fk_test_" followed by base62 characters.
bool contains_token(const char *text);

// Masks, in place, every base62 character after the first 16 of each
// "fk_live_"/"fk_test_" run (the display prefix stays, for support): a token,
// a truncated one or one with a typo alike. Returns how many it masked.
// Text without the prefixes is not written to at all.
size_t scrub_tokens(char *text);

} // namespace flint
