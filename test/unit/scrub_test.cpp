#include <gtest/gtest.h>

#include <string>

#include "digest.hpp"
#include "scrub.hpp"
#include "token.hpp"

using namespace flint;

namespace {
std::string token() {
    Uuid id;
    SecretBytes s;
    random_bytes(id.data(), id.size());
    random_bytes(s.data(), s.size());
    return format_token(Mode::live, id, s);
}
} // namespace

TEST(Scrub, MasksTheSecretKeepsTheDisplayPrefix) {
    std::string t = token();
    std::string msg = "statement: SELECT flint_verify_key('" + t + "', 'payments:read', NULL)";
    ASSERT_TRUE(contains_token(msg.c_str()));
    EXPECT_EQ(scrub_tokens(msg.data()), 1u);
    EXPECT_EQ(msg.find(t.substr(16)), std::string::npos);
    EXPECT_NE(msg.find(t.substr(0, 16) + std::string(53, '*') + "'"), std::string::npos) << msg;
    EXPECT_FALSE(contains_token(msg.c_str()) && msg.find(t.substr(20, 10)) != std::string::npos);
}

TEST(Scrub, EveryOccurrenceAndTypos) {
    std::string a = token(), b = "fk_test_" + token().substr(8, 40); // a truncated one
    std::string msg = "parameters: $1 = '" + a + "', $2 = '" + b + "', $3 = '" + a + "x'";
    EXPECT_EQ(scrub_tokens(msg.data()), 3u);
    EXPECT_EQ(msg.find(a.substr(16, 20)), std::string::npos);
    EXPECT_EQ(msg.find(b.substr(16, 20)), std::string::npos);
}

TEST(Scrub, LeavesOtherTextAlone) {
    std::string msg = "duration: 0.1 ms  statement: SELECT 1 -- fk_ fk_prod_abc fk_live_ fk_test-x";
    std::string copy = msg;
    EXPECT_FALSE(contains_token(msg.c_str()));
    EXPECT_EQ(scrub_tokens(msg.data()), 0u);
    EXPECT_EQ(msg, copy);
    EXPECT_EQ(scrub_tokens(nullptr), 0u);
    EXPECT_FALSE(contains_token(nullptr));
}

TEST(Scrub, ShortFragmentIsMaskedWhole) {
    std::string msg = "key fk_live_abc was";
    EXPECT_EQ(scrub_tokens(msg.data()), 1u);
    EXPECT_EQ(msg, "key fk_live_*** was");
}

TEST(Scrub, ADisplayPrefixAloneIsLeftAsItIs) {
    std::string t = token();
    std::string msg = "key_revoked: key " + t.substr(0, 16) + "\xE2\x80\xA6 has been revoked";
    std::string copy = msg;
    EXPECT_EQ(scrub_tokens(msg.data()), 0u);
    EXPECT_EQ(msg, copy) << "messages show the real display prefix";
    std::string longer = "key " + t.substr(0, 17) + " x";
    EXPECT_EQ(scrub_tokens(longer.data()), 1u);
    EXPECT_EQ(longer, "key " + t.substr(0, 16) + "* x") << "one character past the prefix is masked";
}

TEST(Scrub, ADoubledPrefixStillLosesTheSecret) {
    // 'fk_live_' || token: the inner "fk" is a fragment after the outer
    // prefix; the token itself is found by its body.
    std::string t = token();
    std::string msg = "statement: SELECT flint_verify_key('fk_live_" + t + "', 'payments:read', NULL)";
    ASSERT_TRUE(contains_token(msg.c_str()));
    EXPECT_GE(scrub_tokens(msg.data()), 1u);
    EXPECT_EQ(msg.find(t.substr(16, 20)), std::string::npos) << msg;
    EXPECT_EQ(msg.find(t.substr(40)), std::string::npos) << msg;
}

TEST(Scrub, ABodyWithoutItsPrefixIsFoundByItsChecksum) {
    std::string t = token();
    const std::string body = t.substr(8); // 61 characters: key id, secret, checksum
    for (const std::string &around :
         {std::string("app_") + body, "x" + body + "y", "\"" + body + "\" is invalid", "live_" + body}) {
        std::string msg = around;
        ASSERT_TRUE(contains_token(msg.c_str())) << around;
        EXPECT_EQ(scrub_tokens(msg.data()), 1u) << around;
        EXPECT_EQ(msg.find(body.substr(8)), std::string::npos) << msg;
        EXPECT_NE(msg.find(body.substr(0, 8) + std::string(53, '*')), std::string::npos) << msg;
    }
}

TEST(Scrub, ATestKeysBodyToo) {
    Uuid id;
    SecretBytes s;
    random_bytes(id.data(), id.size());
    random_bytes(s.data(), s.size());
    std::string body = format_token(Mode::test, id, s).substr(8);
    std::string msg = "name: " + body;
    EXPECT_EQ(scrub_tokens(msg.data()), 1u);
    EXPECT_EQ(msg.find(body.substr(8)), std::string::npos);
}

TEST(Scrub, LongRunsWithoutAChecksumAreLeftAlone) {
    // A SHA-256 in hex (64 characters), a base62 blob: no checksum matches.
    std::string msg =
        "digest e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 and " + std::string(120, 'Q');
    std::string copy = msg;
    EXPECT_FALSE(contains_token(msg.c_str()));
    EXPECT_EQ(scrub_tokens(msg.data()), 0u);
    EXPECT_EQ(msg, copy);
}

TEST(Scrub, TwoBodiesGluedTogetherAreBothFound) {
    std::string a = token().substr(8), b = token().substr(8);
    std::string msg = a + b;
    EXPECT_EQ(scrub_tokens(msg.data()), 2u);
    EXPECT_EQ(msg.find(a.substr(8, 30)), std::string::npos);
    EXPECT_EQ(msg.find(b.substr(8, 30)), std::string::npos);
}

TEST(Scrub, ADoubledPrefixCutShortLosesWhatItHasOfTheSecret) {
    // application_name keeps 63 bytes: 'fk_live_' || token holds the inner
    // prefix, the key id and 25 of the 33 secret characters, no checksum.
    std::string t = token();
    std::string msg = ("fk_live_" + t).substr(0, 63);
    EXPECT_GE(scrub_tokens(msg.data()), 1u);
    EXPECT_EQ(msg.find(t.substr(30, 10)), std::string::npos) << msg; // secret characters
    EXPECT_NE(msg.find(t.substr(0, 16)), std::string::npos) << msg;  // the display prefix stays
}

TEST(Scrub, FragmentsOfTheStatementsTokenWithoutPrefixOrChecksum) {
    std::string t = token();
    const std::string source = "SELECT flint_create_key(m, 'n', '{a:b}', '{\"note\": " + t + "}'::jsonb)";
    // A parser's CONTEXT quotes the tail of the line: the secret's last 33
    // characters and the checksum, no prefix, no key id.
    std::string context = "JSON data, line 1: ..." + t.substr(36) + "}";
    ASSERT_FALSE(contains_token(context.c_str())) << "the tail alone is not recognised as a token";
    EXPECT_EQ(scrub_fragments(context.data(), source.c_str()), 1u);
    EXPECT_EQ(context, "JSON data, line 1: ..." + std::string(33, '*') + "}");
    // A DETAIL quoting the secret's middle, and the display prefix left alone.
    std::string detail = "Token \"" + t.substr(30, 20) + "\" is invalid; key " + t.substr(0, 16);
    EXPECT_EQ(scrub_fragments(detail.data(), source.c_str()), 1u);
    EXPECT_EQ(detail, "Token \"" + std::string(20, '*') + "\" is invalid; key " + t.substr(0, 16));
}

TEST(Scrub, FragmentsLeaveShortRunsAndOtherTextAlone) {
    std::string t = token();
    const std::string source = "SELECT flint_verify_key('" + t + "', 'payments:read', NULL)";
    std::string msg = "function flint_verify_key(unknown) " + t.substr(40, kMinFragment - 1) + " abcdefghijklmnop";
    const std::string before = msg;
    EXPECT_EQ(scrub_fragments(msg.data(), source.c_str()), 0u);
    EXPECT_EQ(msg, before);
    EXPECT_EQ(scrub_fragments(msg.data(), "SELECT 1"), 0u) << "no token in the statement: nothing to look for";
    EXPECT_EQ(scrub_fragments(nullptr, source.c_str()), 0u);
    EXPECT_EQ(scrub_fragments(msg.data(), nullptr), 0u);
    // A body with a doubled prefix in the statement is found as well.
    const std::string doubled = "SELECT 'fk_live_' || '" + t + "'";
    std::string tail = "..." + t.substr(50);
    EXPECT_EQ(scrub_fragments(tail.data(), doubled.c_str()), 1u);
    EXPECT_EQ(tail, "..." + std::string(t.size() - 50, '*'));
}
