#include "token.hpp"

#include <cstring>

#include "crc32.hpp"

namespace flint {

using namespace token_layout;

namespace {
constexpr std::string_view kLivePrefix = "fk_live_";
constexpr std::string_view kTestPrefix = "fk_test_";
} // namespace

const char *mode_name(Mode mode) { return mode == Mode::live ? "live" : "test"; }

std::optional<Mode> parse_mode(std::string_view text) {
    if (text == "live")
        return Mode::live;
    if (text == "test")
        return Mode::test;
    return std::nullopt;
}

const char *parse_error_text(ParseError error) {
    switch (error) {
    case ParseError::none: return "well-formed";
    case ParseError::null_input: return "no key was given";
    case ParseError::empty: return "the key is empty";
    case ParseError::wrong_length: return "the key has the wrong length";
    case ParseError::wrong_prefix: return "the key does not start with fk_live_ or fk_test_";
    case ParseError::bad_character: return "the key has a character outside base62";
    case ParseError::out_of_range: return "the key has a field out of range";
    case ParseError::bad_checksum: return "the key's checksum does not match";
    }
    return "malformed";
}

ParseError parse_token(std::string_view text, ParsedToken &out) {
    if (text.empty())
        return ParseError::empty;
    // Prefix first, so a key of another system is named as such whatever its length.
    std::string_view prefix = text.substr(0, kPrefixLen);
    if (prefix == kLivePrefix)
        out.mode = Mode::live;
    else if (prefix == kTestPrefix)
        out.mode = Mode::test;
    else
        return ParseError::wrong_prefix;
    if (text.size() != kTokenLen)
        return ParseError::wrong_length;
    for (size_t i = kPrefixLen; i < kTokenLen; ++i)
        if (base62::digit(text[i]) < 0)
            return ParseError::bad_character;

    std::string_view id_text = text.substr(kPrefixLen, kIdLen);
    std::string_view crc_text = text.substr(kPrefixLen + kIdLen + kSecretLen, kCrcLen);
    uint8_t crc_bytes[4];
    if (!base62::decode(id_text, out.key_id.data(), out.key_id.size()) ||
        !base62::decode(crc_text, crc_bytes, sizeof crc_bytes))
        return ParseError::out_of_range;
    // The secret is never decoded: only its digest is compared, over the whole token.
    // Its characters are base62 (checked above); the CRC catches the rest.
    uint32_t expected = (uint32_t(crc_bytes[0]) << 24) | (uint32_t(crc_bytes[1]) << 16) |
                        (uint32_t(crc_bytes[2]) << 8) | uint32_t(crc_bytes[3]);
    if (crc32(text.data(), kPrefixLen + kIdLen + kSecretLen) != expected)
        return ParseError::bad_checksum;
    return ParseError::none;
}

std::string format_token(Mode mode, const Uuid &key_id, const SecretBytes &secret) {
    std::string token(kTokenLen, '0');
    std::memcpy(token.data(), (mode == Mode::live ? kLivePrefix : kTestPrefix).data(), kPrefixLen);
    base62::encode(key_id.data(), key_id.size(), token.data() + kPrefixLen, kIdLen);
    base62::encode(secret.data(), secret.size(), token.data() + kPrefixLen + kIdLen, kSecretLen);
    uint32_t crc = crc32(token.data(), kPrefixLen + kIdLen + kSecretLen);
    uint8_t crc_bytes[4] = {uint8_t(crc >> 24), uint8_t(crc >> 16), uint8_t(crc >> 8), uint8_t(crc)};
    base62::encode(crc_bytes, 4, token.data() + kPrefixLen + kIdLen + kSecretLen, kCrcLen);
    return token;
}

std::string display_prefix(std::string_view token) { return std::string(token.substr(0, kDisplayPrefixLen)); }

std::string shown_prefix(std::string_view prefix) { return std::string(prefix) + "\xE2\x80\xA6"; }

std::string uuid_to_string(const Uuid &id) {
    static const char hex[] = "0123456789abcdef";
    std::string out;
    out.reserve(36);
    for (size_t i = 0; i < id.size(); ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out.push_back('-');
        out.push_back(hex[id[i] >> 4]);
        out.push_back(hex[id[i] & 0xf]);
    }
    return out;
}

} // namespace flint
