#include "scrub.hpp"

#include <cstring>

#include "base62.hpp"
#include "token.hpp"

namespace flint {

namespace {
// The next "fk_live_"/"fk_test_" at or after p, or nullptr.
char *next_prefix(char *p) {
    while ((p = std::strstr(p, "fk_")) != nullptr) {
        if (std::strncmp(p + 3, "live_", 5) == 0 || std::strncmp(p + 3, "test_", 5) == 0)
            return p;
        p += 3;
    }
    return nullptr;
}
} // namespace

bool contains_token(const char *text) {
    if (!text)
        return false;
    for (char *p = next_prefix(const_cast<char *>(text)); p; p = next_prefix(p + 8))
        if (base62::digit(p[8]) >= 0)
            return true;
    return false;
}

size_t scrub_tokens(char *text) {
    if (!text)
        return 0;
    size_t masked = 0;
    for (char *p = next_prefix(text); p; p = next_prefix(p)) {
        char *q = p + token_layout::kPrefixLen;
        size_t run = 0;
        while (base62::digit(q[run]) >= 0)
            ++run;
        const size_t keep = token_layout::kDisplayPrefixLen - token_layout::kPrefixLen;
        if (run > 0 && run != keep) {
            // Keep the key-id characters of the display prefix (a display
            // prefix alone, as messages show it, is left as it is); a shorter
            // run (a fragment) is masked whole, since nothing identifies it anyway.
            size_t from = run > keep ? keep : 0;
            for (size_t i = from; i < run; ++i)
                q[i] = '*';
            ++masked;
        }
        p = q + run;
    }
    return masked;
}

} // namespace flint
