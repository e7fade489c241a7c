#include <gtest/gtest.h>

#include "verify.hpp"

using namespace flint;

namespace {
const std::vector<std::string> kCatalog = {"payments:read", "payments:write", "refunds:read", "refunds:write"};

struct Fixture : ::testing::Test {
    KeyRecord key;
    std::string token = "fk_live_the-current-token";
    std::string old_token = "fk_live_the-old-token";
    Uuid merchant{};
    Micros now = 1'000'000;

    void SetUp() override {
        merchant[0] = 7;
        key.merchant_id = merchant;
        key.mode = Mode::live;
        key.secret_hash = sha256(token);
        key.scopes = {"payments:write"};
    }
    Code run(const std::string &presented, std::optional<std::string_view> scope = "payments:read",
             std::optional<Uuid> m = std::nullopt, Mode mode = Mode::live, const KeyRecord *k = nullptr) {
        VerifyRequest req;
        req.scope = scope;
        req.merchant = m ? m : std::optional<Uuid>(merchant);
        return decide(k ? k : &key, mode, sha256(presented), req, kCatalog, now).code;
    }
};
} // namespace

TEST_F(Fixture, Ok) { EXPECT_EQ(run(token), Code::ok); }

TEST_F(Fixture, UnknownKeyIsInvalid) {
    VerifyRequest req;
    req.scope = "payments:read";
    req.merchant = merchant;
    EXPECT_EQ(decide(nullptr, Mode::live, sha256(token), req, kCatalog, now).code, Code::invalid_key);
}

TEST_F(Fixture, WrongSecretIsInvalid) { EXPECT_EQ(run("fk_live_something-else"), Code::invalid_key); }

TEST_F(Fixture, ModeMismatchIsInvalid) {
    EXPECT_EQ(run(token, "payments:read", std::nullopt, Mode::test), Code::invalid_key);
}

TEST_F(Fixture, Revoked) {
    key.revoked = true;
    EXPECT_EQ(run(token), Code::key_revoked);
    EXPECT_EQ(run("fk_live_wrong"), Code::invalid_key); // a wrong secret reveals nothing more
}

TEST_F(Fixture, Expired) {
    key.expires_at = now;
    EXPECT_EQ(run(token), Code::key_expired);
    key.expires_at = now + 1;
    EXPECT_EQ(run(token), Code::ok);
}

TEST_F(Fixture, RotationGrace) {
    key.previous_secret_hash = sha256(old_token);
    key.previous_secret_expires_at = now + 10;
    EXPECT_EQ(run(old_token), Code::ok);
    EXPECT_EQ(run(token), Code::ok);
    key.previous_secret_expires_at = now;
    EXPECT_EQ(run(old_token), Code::key_expired);
    EXPECT_EQ(run(token), Code::ok);
    key.previous_secret_hash.reset();
    EXPECT_EQ(run(old_token), Code::invalid_key);
}

TEST_F(Fixture, OrderRevokedBeforeExpiredBeforeSuspended) {
    key.revoked = true;
    key.expires_at = 0;
    key.merchant_suspended = true;
    EXPECT_EQ(run(token), Code::key_revoked);
    key.revoked = false;
    EXPECT_EQ(run(token), Code::key_expired);
    key.expires_at.reset();
    EXPECT_EQ(run(token), Code::merchant_suspended);
}

TEST_F(Fixture, SuspendedBeforeWrongMerchantBeforeScope) {
    Uuid other{};
    other[0] = 9;
    key.merchant_suspended = true;
    EXPECT_EQ(run(token, "refunds:write", other), Code::merchant_suspended);
    key.merchant_suspended = false;
    EXPECT_EQ(run(token, "refunds:write", other), Code::wrong_merchant);
    EXPECT_EQ(run(token, "refunds:write"), Code::missing_scope);
}

TEST_F(Fixture, ScopeChecks) {
    EXPECT_EQ(run(token, "payments:write"), Code::ok);
    EXPECT_EQ(run(token, "refunds:read"), Code::missing_scope);
    EXPECT_EQ(run(token, "refunds:wirte"), Code::unknown_scope);
    EXPECT_EQ(run(token, "payments:*"), Code::unknown_scope);
    EXPECT_EQ(run(token, std::nullopt), Code::unknown_scope);
}

TEST_F(Fixture, NullMerchantFailsClosed) {
    VerifyRequest req;
    req.scope = "payments:read";
    EXPECT_EQ(decide(&key, Mode::live, sha256(token), req, kCatalog, now).code, Code::wrong_merchant);
}

TEST_F(Fixture, AuthenticateNeedsNoScopeOrMerchant) {
    VerifyRequest req;
    req.check_merchant_and_scope = false;
    EXPECT_EQ(decide(&key, Mode::live, sha256(token), req, kCatalog, now).code, Code::ok);
}

TEST_F(Fixture, AllowlistAfterMerchantBeforeScope) {
    Cidr office;
    office.family = 4;
    office.bits = 16;
    office.bytes[0] = 10, office.bytes[1] = 1;
    key.allowed_ips = {office};
    IpAddress inside, outside;
    inside.family = outside.family = 4;
    inside.bytes[0] = 10, inside.bytes[1] = 1, inside.bytes[3] = 9;
    outside.bytes[0] = 10, outside.bytes[1] = 2;
    auto with = [&](const IpAddress &ip, std::optional<std::string_view> scope, std::optional<Uuid> m = std::nullopt) {
        VerifyRequest req;
        req.scope = scope;
        req.merchant = m ? m : std::optional<Uuid>(merchant);
        req.client = ip;
        return decide(&key, Mode::live, sha256(token), req, kCatalog, now).code;
    };
    EXPECT_EQ(with(inside, "payments:read"), Code::ok);
    EXPECT_EQ(with(outside, "payments:read"), Code::ip_not_allowed);
    EXPECT_EQ(with(IpAddress{}, "payments:read"), Code::ip_not_allowed) << "no address to check: refused";
    EXPECT_EQ(with(outside, "refunds:write"), Code::ip_not_allowed) << "the address is checked before the scope";
    Uuid other{};
    other[0] = 9;
    EXPECT_EQ(with(outside, "payments:read", other), Code::wrong_merchant) << "and after the merchant";
    key.disabled = true;
    EXPECT_EQ(with(outside, "payments:read"), Code::key_disabled);
    VerifyRequest auth; // authenticate checks the allowlist too
    auth.check_merchant_and_scope = false;
    auth.client = outside;
    key.disabled = false;
    EXPECT_EQ(decide(&key, Mode::live, sha256(token), auth, kCatalog, now).code, Code::ip_not_allowed);
}

TEST_F(Fixture, DisabledAfterRevokedBeforeExpired) {
    key.disabled = true;
    key.expires_at = now - 1;
    EXPECT_EQ(run(token), Code::key_disabled);
    key.revoked = true;
    EXPECT_EQ(run(token), Code::key_revoked) << "revocation is final and wins";
    EXPECT_EQ(run("fk_live_wrong"), Code::invalid_key) << "without the secret nothing more is revealed";
}

TEST(DescribeFailure, EveryCodeHasItsMessage) {
    const std::string key = "fk_live_3xQabcde\xE2\x80\xA6";
    Uuid m{};
    m[15] = 2;
    auto text = [&](Code c, std::optional<std::string_view> scope = std::nullopt,
                    std::optional<Uuid> merchant = std::nullopt) {
        return describe_failure(c, ParseError::bad_checksum, key, scope, merchant, kCatalog);
    };
    EXPECT_EQ(text(Code::ok).message, "") << "the hot path builds no strings";
    EXPECT_EQ(text(Code::malformed_key).message.rfind("malformed_key: ", 0), 0u);
    EXPECT_NE(text(Code::malformed_key).hint, "");
    EXPECT_EQ(text(Code::invalid_key).message, "invalid_key: key " + key + " is not valid");
    EXPECT_EQ(text(Code::key_revoked).message, "key_revoked: key " + key + " has been revoked");
    EXPECT_EQ(text(Code::key_disabled).message, "key_disabled: key " + key + " is disabled");
    EXPECT_EQ(text(Code::ip_not_allowed).message.rfind("ip_not_allowed: key " + key, 0), 0u);
    EXPECT_EQ(text(Code::rate_limited).message.rfind("rate_limited: key " + key, 0), 0u);
    EXPECT_EQ(text(Code::usage_exceeded).message.rfind("usage_exceeded: key " + key, 0), 0u);
    EXPECT_EQ(text(Code::wrong_merchant).message, "wrong_merchant: no merchant was given for key " + key);
    EXPECT_EQ(text(Code::wrong_merchant, std::nullopt, m).message,
              "wrong_merchant: key " + key + " does not belong to merchant 00000000-0000-0000-0000-000000000002");
    EXPECT_EQ(text(Code::missing_scope, "refunds:write").message,
              "missing_scope: key " + key + " lacks scope \"refunds:write\"");
    EXPECT_EQ(text(Code::unknown_scope).message, "unknown_scope: no scope was given");
    EXPECT_EQ(text(Code::unknown_scope, "not a scope").message,
              "unknown_scope: the scope is not of the form resource:action");
    FailureText typo = text(Code::unknown_scope, "refunds:wirte");
    EXPECT_EQ(typo.message, "unknown_scope: scope \"refunds:wirte\" is not in the catalog");
    EXPECT_EQ(typo.hint, "Did you mean \"refunds:write\"?");
}
