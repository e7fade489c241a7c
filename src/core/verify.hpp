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
};

struct VerifyRequest {
    // verify/check compare the key's merchant and scopes with the request's
    // (a NULL merchant or scope fails closed); authenticate checks the key only.
    bool check_merchant_and_scope = true;
    std::optional<std::string_view> scope;
    std::optional<Uuid> merchant;
};

struct Decision {
    Code code = Code::ok;
    bool via_previous_secret = false; // matched the pre-rotation secret in its grace
};

// Runs, in order: hash match (current and previous secret, always both, in
// equal time), revoked, disabled, expired, merchant suspended, wrong
// merchant, scope.
// `key` is null when no key has the token's id: a dummy digest is compared so
// the time taken does not tell whether the id exists.
Decision decide(const KeyRecord *key, Mode token_mode, const Digest &token_digest, const VerifyRequest &request,
                const std::vector<std::string> &catalog, Micros now);

} // namespace flint
