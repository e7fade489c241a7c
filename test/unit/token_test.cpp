#include <gtest/gtest.h>

#include <set>
#include <string>

#include "base62.hpp"
#include "crc32.hpp"
#include "digest.hpp"
#include "token.hpp"

using namespace flint;
using namespace flint::token_layout;

namespace {
Uuid random_uuid() {
    Uuid id;
    random_bytes(id.data(), id.size());
    return id;
}
SecretBytes random_secret() {
    SecretBytes s;
    random_bytes(s.data(), s.size());
    return s;
}
std::string fresh_token(Mode mode = Mode::live) { return format_token(mode, random_uuid(), random_secret()); }
} // namespace

TEST(Crc32, KnownVectors) {
    EXPECT_EQ(crc32("", 0), 0u);
    EXPECT_EQ(crc32("123456789", 9), 0xCBF43926u);
    EXPECT_EQ(crc32("The quick brown fox jumps over the lazy dog", 43), 0x414FA339u);
}

TEST(Base62, Widths) {
    EXPECT_EQ(base62::encoded_width(16), 22u);
    EXPECT_EQ(base62::encoded_width(24), 33u);
    EXPECT_EQ(base62::encoded_width(4), 6u);
    EXPECT_EQ(base62::encoded_width(1), 2u);
}

TEST(Base62, EdgeValues) {
    uint8_t zero[16] = {};
    EXPECT_EQ(base62::encode(zero, 16), std::string(22, '0'));
    uint8_t ones[16];
    std::fill(std::begin(ones), std::end(ones), 0xff);
    std::string max = base62::encode(ones, 16);
    EXPECT_EQ(max.size(), 22u);
    uint8_t back[16];
    ASSERT_TRUE(base62::decode(max, back, 16));
    EXPECT_EQ(0, memcmp(back, ones, 16));
    // One more than 2^128 - 1 does not fit: "zzz..." is out of range, not an alias.
    EXPECT_FALSE(base62::decode(std::string(22, 'z'), back, 16));
    uint8_t one[4] = {0, 0, 0, 1};
    EXPECT_EQ(base62::encode(one, 4), "000001");
    uint8_t sixty_two[4] = {0, 0, 0, 62};
    EXPECT_EQ(base62::encode(sixty_two, 4), "000010");
    EXPECT_FALSE(base62::decode("00-001", back, 4));
    EXPECT_FALSE(base62::decode("00\xc3\xa9"
                                "01",
                                back, 4));
}

TEST(Base62, RoundTripsRandomValues) {
    for (int i = 0; i < 2000; ++i) {
        uint8_t value[24], back[24];
        random_bytes(value, sizeof value);
        std::string text = base62::encode(value, sizeof value);
        ASSERT_EQ(text.size(), 33u);
        ASSERT_TRUE(base62::decode(text, back, sizeof back));
        ASSERT_EQ(0, memcmp(value, back, sizeof value));
    }
}

TEST(Token, RoundTrip) {
    for (Mode mode : {Mode::live, Mode::test}) {
        Uuid id = random_uuid();
        std::string token = format_token(mode, id, random_secret());
        ASSERT_EQ(token.size(), kTokenLen);
        EXPECT_EQ(token.substr(0, 8), mode == Mode::live ? "fk_live_" : "fk_test_");
        ParsedToken parsed;
        ASSERT_EQ(parse_token(token, parsed), ParseError::none);
        EXPECT_EQ(parsed.mode, mode);
        EXPECT_EQ(parsed.key_id, id);
        EXPECT_EQ(display_prefix(token), token.substr(0, 16));
    }
}

TEST(Token, SecretsAreDistinct) {
    std::set<std::string> seen;
    for (int i = 0; i < 1000; ++i)
        ASSERT_TRUE(seen.insert(fresh_token()).second);
}

TEST(Token, MalformedClasses) {
    std::string good = fresh_token();
    ParsedToken p;
    EXPECT_EQ(parse_token("", p), ParseError::empty);
    EXPECT_EQ(parse_token("sk_live_" + good.substr(8), p), ParseError::wrong_prefix);
    EXPECT_EQ(parse_token("fk_prod_" + good.substr(8), p), ParseError::wrong_prefix);
    EXPECT_EQ(parse_token("FK_LIVE_" + good.substr(8), p), ParseError::wrong_prefix);
    EXPECT_EQ(parse_token("fk_live", p), ParseError::wrong_prefix);
    EXPECT_EQ(parse_token(good.substr(0, kTokenLen - 1), p), ParseError::wrong_length);
    EXPECT_EQ(parse_token(good + "0", p), ParseError::wrong_length);
    EXPECT_EQ(parse_token(good + " ", p), ParseError::wrong_length);
    EXPECT_EQ(parse_token(" " + good.substr(1), p), ParseError::wrong_prefix);
    EXPECT_EQ(parse_token(std::string(1 << 20, 'a'), p), ParseError::wrong_prefix);
    EXPECT_EQ(parse_token("fk_live_" + std::string(1 << 20, 'a'), p), ParseError::wrong_length);
    std::string bad_char = good;
    bad_char[20] = '-';
    EXPECT_EQ(parse_token(bad_char, p), ParseError::bad_character);
    std::string non_ascii = good.substr(0, kTokenLen - 2) + "\xc3\xa9"; // é, same byte length
    EXPECT_EQ(parse_token(non_ascii, p), ParseError::bad_character);
    std::string nul = good;
    nul[30] = '\0';
    EXPECT_EQ(parse_token(nul, p), ParseError::bad_character);
    std::string out_of_range = good;
    out_of_range.replace(8, 22, std::string(22, 'z'));
    EXPECT_EQ(parse_token(out_of_range, p), ParseError::out_of_range);
}

TEST(Token, LiveTestSwapFailsChecksum) {
    std::string live = fresh_token(Mode::live);
    std::string swapped = "fk_test_" + live.substr(8);
    ParsedToken p;
    EXPECT_EQ(parse_token(swapped, p), ParseError::bad_checksum);
}

// The checksum must catch a change of any single character at every position.
TEST(Token, ChecksumCatchesEverySingleCharacterChange) {
    for (int round = 0; round < 5; ++round) {
        std::string good = fresh_token(round % 2 ? Mode::test : Mode::live);
        for (size_t pos = kPrefixLen; pos < kTokenLen; ++pos) {
            for (const char *c = base62::kAlphabet; *c; ++c) {
                if (*c == good[pos])
                    continue;
                std::string changed = good;
                changed[pos] = *c;
                ParsedToken p;
                ParseError e = parse_token(changed, p);
                ASSERT_TRUE(e == ParseError::bad_checksum || e == ParseError::out_of_range)
                    << "position " << pos << " char " << *c;
            }
        }
    }
}

TEST(Token, AdjacentTranspositionsAreCaught) {
    std::string good = fresh_token();
    for (size_t pos = kPrefixLen; pos + 1 < kTokenLen; ++pos) {
        if (good[pos] == good[pos + 1])
            continue;
        std::string changed = good;
        std::swap(changed[pos], changed[pos + 1]);
        ParsedToken p;
        ASSERT_NE(parse_token(changed, p), ParseError::none) << pos;
    }
}

TEST(Uuid, Text) {
    Uuid id{};
    for (size_t i = 0; i < id.size(); ++i)
        id[i] = static_cast<uint8_t>(i * 17);
    EXPECT_EQ(uuid_to_string(id), "00112233-4455-6677-8899-aabbccddeeff");
}

TEST(Digest, Sha256KnownVector) {
    Digest d = sha256("abc");
    const uint8_t expected[] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
                                0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
                                0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    EXPECT_EQ(0, memcmp(d.data(), expected, 32));
    EXPECT_EQ(sha256("abc"), d); // the reused context gives the same answer again
    EXPECT_NE(sha256("abd"), d);
}

TEST(Digest, EqualTimeCompare) {
    Digest a = sha256("x"), b = a;
    EXPECT_TRUE(digest_equal(a, b));
    b[31] ^= 1;
    EXPECT_FALSE(digest_equal(a, b));
    b = a;
    b[0] ^= 0x80;
    EXPECT_FALSE(digest_equal(a, b));
}
