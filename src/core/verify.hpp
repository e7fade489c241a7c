// The verification decision (README.md, "Errors": codes and check order), given what the tables hold.
// Postgres-free: the Postgres layer loads the KeyRecord and the catalog.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "digest.hpp"
#include "errors.hpp"
#include "limits.hpp"
#include "token.hpp"

namespace flint {

// Microseconds on one clock (Postgres TimestampTz); INT64_MAX is 'infinity'.
using Micros = int64_t;

// What verification needs to know about one key; never holds the secret.
struct KeyRecord {
    Uuid id{};
    Uuid merchant_id{};
    Mode mode = Mode::live;
    std::string display_prefix;
    Digest secret_hash{};
    std::optional<Digest> previous_secret_hash;
    std::optional<Micros> previous_secret_expires_at;
    std::optional<Micros> expires_at;
    bool revoked = false;
    bool disabled = false; // reversible; revoked wins
    bool merchant_suspended = false;
    std::vector<std::string> scopes;
    // Traffic controls (none when rate_limit is 0 / has_quota false / the allowlist empty).
    int32_t rate_limit = 0;
    int64_t rate_window_us = 0;
    int32_t merchant_rate_limit = 0;
    int64_t merchant_rate_window_us = 0;
    bool has_quota = false;
    Refill refill = Refill::none;
    int64_t quota_version = 0;
    std::vector<Cidr> allowed_ips;
};

struct VerifyRequest {
    // verify/check compare the key's merchant and scopes with the request's
    // (a NULL merchant or scope fails closed); authenticate checks the key only.
    bool check_merchant_and_scope = true;
    std::optional<std::string_view> scope;
    std::optional<Uuid> merchant;
    IpAddress client; // checked against the key's allowlist (family 0: no address)
};

struct Decision {
    Code code = Code::ok;
    bool via_previous_secret = false; // matched the pre-rotation secret in its grace
};

// The message (and hint) a refused verification raises. `shown_key` is the
// key as messages show it ("fk_live_3xQabcde…"); `scope` and `merchant` are
// what the caller asked for; `catalog` is only read for unknown_scope's
// suggestion. Nothing for ok (the hot path builds no strings).
struct FailureText {
    std::string message, hint;
};
FailureText describe_failure(Code code, ParseError parse_error, std::string_view shown_key,
                             std::optional<std::string_view> scope, const std::optional<Uuid> &merchant,
                             const std::vector<std::string> &catalog);

// Runs, in order: hash match (current and previous secret, always both, in
// equal time), revoked, disabled, expired, merchant suspended, wrong
// merchant, IP allowlist, scope. (Rate limits and quotas follow, in shared
// memory: see limits.hpp and the Postgres layer.)
// `key` is null when no key has the token's id: a dummy digest is compared so
// the time taken does not tell whether the id exists.
Decision decide(const KeyRecord *key, Mode token_mode, const Digest &token_digest, const VerifyRequest &request,
                const std::vector<std::string> &catalog, Micros now);

} // namespace flint
