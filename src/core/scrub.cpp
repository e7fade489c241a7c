#include "scrub.hpp"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

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

// A token's body (key id, secret and checksum: 61 base62 characters) is
// recognised wherever it stands, with its prefix or without (a doubled or
// cut-off prefix, a quote of the tail): its checksum, over a prefix and the
// body, names it. Calls found(start) for each, left to right, and returns
// how many; `start` points at the body's first character.
template <class Found> size_t for_each_body(char *text, Found found) {
    using namespace token_layout;
    size_t count = 0;
    char candidate[kTokenLen];
    for (char *p = text; *p;) {
        if (base62::digit(*p) < 0) {
            ++p;
            continue;
        }
        char *end = p;
        while (base62::digit(*end) >= 0)
            ++end;
        const size_t run = static_cast<size_t>(end - p);
        for (size_t i = 0; run >= kBodyLen && i + kBodyLen <= run;) {
            bool body = false;
            for (const char *prefix : {"fk_live_", "fk_test_"}) {
                std::memcpy(candidate, prefix, kPrefixLen);
                std::memcpy(candidate + kPrefixLen, p + i, kBodyLen);
                ParsedToken parsed;
                body = body || parse_token(std::string_view(candidate, kTokenLen), parsed) == ParseError::none;
            }
            if (body) {
                found(p + i);
                ++count;
                i += kBodyLen;
            } else {
                ++i;
            }
        }
        p = end;
    }
    std::memset(candidate, 0, sizeof candidate); // held a secret
    return count;
}
} // namespace

bool contains_token(const char *text) {
    if (!text)
        return false;
    for (char *p = next_prefix(const_cast<char *>(text)); p; p = next_prefix(p + 8))
        if (base62::digit(p[8]) >= 0)
            return true;
    return for_each_body(const_cast<char *>(text), [](char *) {}) > 0;
}

size_t scrub_tokens(char *text) {
    if (!text)
        return 0;
    // Whole bodies first, before the prefix pass changes what surrounds them:
    // the secret goes, the key id's first characters stay (as the display
    // prefix shows them).
    size_t masked = for_each_body(text, [](char *body) {
        const size_t keep = token_layout::kDisplayPrefixLen - token_layout::kPrefixLen;
        std::memset(body + keep, '*', token_layout::kBodyLen - keep);
    });
    for (char *p = next_prefix(text); p; p = next_prefix(p)) {
        char *q = p + token_layout::kPrefixLen;
        size_t run = 0;
        while (base62::digit(q[run]) >= 0)
            ++run;
        // A doubled prefix ('fk_live_' || token): the run ends in the "fk" of
        // the next prefix. Masking it would hide that prefix and leave the
        // token after it whole; mask what comes before it, then go on there.
        if (run >= 2 && next_prefix(q + run - 2) == q + run - 2) {
            if (run > 2) {
                std::memset(q, '*', run - 2);
                ++masked;
            }
            p = q + run - 2;
            continue;
        }
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

namespace {
// What of each token in `source` is secret: a body past its display
// characters, and the run after a prefix past them.
std::vector<std::string> secret_pieces(const char *source) {
    std::vector<std::string> pieces;
    if (!source)
        return pieces;
    std::string copy(source);
    const size_t keep = token_layout::kDisplayPrefixLen - token_layout::kPrefixLen;
    for_each_body(copy.data(), [&](char *body) { pieces.emplace_back(body + keep, token_layout::kBodyLen - keep); });
    for (char *p = next_prefix(copy.data()); p; p = next_prefix(p + token_layout::kPrefixLen)) {
        const char *q = p + token_layout::kPrefixLen;
        size_t run = 0;
        while (base62::digit(q[run]) >= 0)
            ++run;
        if (run > keep)
            pieces.emplace_back(q + keep, run - keep);
    }
    std::fill(copy.begin(), copy.end(), '\0'); // held the secrets
    return pieces;
}

bool in_a_piece(const std::vector<std::string> &pieces, const char *text, size_t len) {
    for (const std::string &piece : pieces)
        if (piece.find(text, 0, len) != std::string::npos)
            return true;
    return false;
}
} // namespace

size_t scrub_fragments(char *text, const char *source) {
    if (!text || !source)
        return 0;
    std::vector<std::string> pieces = secret_pieces(source);
    size_t masked = 0;
    for (char *p = text; !pieces.empty() && *p;) {
        if (base62::digit(*p) < 0) {
            ++p;
            continue;
        }
        char *end = p;
        while (base62::digit(*end) >= 0)
            ++end;
        for (char *i = p; end - i >= static_cast<long>(kMinFragment);) {
            if (!in_a_piece(pieces, i, kMinFragment)) {
                ++i;
                continue;
            }
            char *j = i + kMinFragment;
            while (j < end && in_a_piece(pieces, i, static_cast<size_t>(j + 1 - i)))
                ++j;
            std::memset(i, '*', static_cast<size_t>(j - i));
            ++masked;
            i = j;
        }
        p = end;
    }
    for (std::string &piece : pieces)
        std::fill(piece.begin(), piece.end(), '\0');
    return masked;
}

} // namespace flint
