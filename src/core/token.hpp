// The API key token: shape, generation and parsing (README.md, "Keys and tokens"). Postgres-free.
//
//   fk_live_ | key id: 22 base62 | secret: 33 base62 | CRC-32: 6 base62
//   prefix 8 + body 61 = 69 characters, e.g. fk_live_0a3F...  (see README)
//
// The key id is the key's uuid (16 bytes), the secret is 24 CSPRNG bytes
// (192 bits), and the CRC-32 covers the 63 characters before it, prefix
// included, so a swapped prefix or any one mistyped character is rejected
// before a table is touched.
#pragma once
#include <array>
#include <cstring>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base62.hpp"

namespace flint {

using Uuid = std::array<uint8_t, 16>;
// For unordered maps keyed by key or merchant ids.
struct UuidHash {
    size_t operator()(const Uuid &id) const {
        size_t h;
        std::memcpy(&h, id.data(), sizeof h); // ids are random: any 8 bytes hash well
        return h;
    }
};
using SecretBytes = std::array<uint8_t, 24>;

enum class Mode : uint8_t { live, test };

const char *mode_name(Mode mode);
std::optional<Mode> parse_mode(std::string_view text);

namespace token_layout {
inline constexpr size_t kPrefixLen = 8; // "fk_live_" / "fk_test_"
inline constexpr size_t kIdLen = base62::encoded_width(sizeof(Uuid));
inline constexpr size_t kSecretLen = base62::encoded_width(sizeof(SecretBytes));
inline constexpr size_t kCrcLen = base62::encoded_width(4);
inline constexpr size_t kBodyLen = kIdLen + kSecretLen + kCrcLen;
inline constexpr size_t kTokenLen = kPrefixLen + kBodyLen;
// What support sees: the prefix and the first 8 characters of the key id.
inline constexpr size_t kDisplayPrefixLen = kPrefixLen + 8;
static_assert(kIdLen == 22 && kSecretLen == 33 && kCrcLen == 6 && kTokenLen == 69);
} // namespace token_layout

// Why a string is not a token. Each is reported as malformed_key.
enum class ParseError : uint8_t {
    none,
    null_input,
    empty,
    wrong_length,
    wrong_prefix,
    bad_character,
    out_of_range, // a base62 field whose value does not fit its byte width
    bad_checksum,
};
const char *parse_error_text(ParseError error);

struct ParsedToken {
    Mode mode = Mode::live;
    Uuid key_id{};
};

// Shape and checksum only: cheap, no allocation, no table access.
ParseError parse_token(std::string_view text, ParsedToken &out);

// Builds the token for a key id and secret.
std::string format_token(Mode mode, const Uuid &key_id, const SecretBytes &secret);

// The display prefix of a well-formed token (its first kDisplayPrefixLen characters).
std::string display_prefix(std::string_view token);
// How messages show a key: its display prefix and an ellipsis, "fk_live_3xQ…".
std::string shown_prefix(std::string_view prefix);

// Canonical 8-4-4-4-12 lower-case text of a uuid.
std::string uuid_to_string(const Uuid &id);

} // namespace flint
