#include "verify.hpp"

#include "scopes.hpp"

namespace flint {

namespace {
// Compared against when the key id is unknown or has no previous secret.
const Digest kDummyDigest = [] {
    Digest d{};
    for (size_t i = 0; i < d.size(); ++i)
        d[i] = static_cast<uint8_t>(0xA5 ^ (i * 31));
    return d;
}();
} // namespace

Decision decide(const KeyRecord *key, Mode token_mode, const Digest &token_digest, const VerifyRequest &request,
                const std::vector<std::string> &catalog, Micros now) {
    const Digest &current = key ? key->secret_hash : kDummyDigest;
    const Digest &previous = key && key->previous_secret_hash ? *key->previous_secret_hash : kDummyDigest;
    // Both comparisons always run: which one matched must not show in the timing.
    bool current_match = digest_equal(token_digest, current);
    bool previous_match = digest_equal(token_digest, previous);

    Decision d;
    if (!key || !(current_match || (previous_match && key->previous_secret_hash)) || key->mode != token_mode) {
        d.code = Code::invalid_key;
        return d;
    }
    d.via_previous_secret = !current_match;
    if (key->revoked) {
        d.code = Code::key_revoked;
        return d;
    }
    if (key->disabled) {
        d.code = Code::key_disabled;
        return d;
    }
    if ((key->expires_at && now >= *key->expires_at) ||
        (d.via_previous_secret && (!key->previous_secret_expires_at || now >= *key->previous_secret_expires_at))) {
        d.code = Code::key_expired;
        return d;
    }
    if (key->merchant_suspended) {
        d.code = Code::merchant_suspended;
        return d;
    }
    if (request.check_merchant_and_scope && (!request.merchant || *request.merchant != key->merchant_id)) {
        d.code = Code::wrong_merchant;
        return d;
    }
    if (!key->allowed_ips.empty() && !ip_allowed(key->allowed_ips, request.client)) {
        d.code = Code::ip_not_allowed;
        return d;
    }
    if (request.check_merchant_and_scope) {
        if (!request.scope || !requestable_scope(catalog, *request.scope)) {
            d.code = Code::unknown_scope;
            return d;
        }
        if (!scope_grants(key->scopes, *request.scope)) {
            d.code = Code::missing_scope;
            return d;
        }
    }
    return d;
}

} // namespace flint
