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

FailureText describe_failure(Code code, ParseError parse_error, std::string_view shown_key,
                             std::optional<std::string_view> scope, const std::optional<Uuid> &merchant,
                             const std::vector<std::string> &catalog) {
    FailureText t;
    const std::string key(shown_key);
    switch (code) {
    case Code::ok:
    case Code::leak_reported: // not a failure: never raised
    case Code::log_queue_full: break;
    case Code::malformed_key:
        t.message = std::string("malformed_key: ") + parse_error_text(parse_error);
        t.hint = "A flint key is fk_live_ or fk_test_ followed by 61 letters and digits.";
        break;
    case Code::invalid_key:
    case Code::key_revoked:
    case Code::key_expired:
    case Code::merchant_suspended:
    case Code::key_disabled:
    case Code::ip_not_allowed:
    case Code::rate_limited:
    case Code::usage_exceeded: t.message = key_failure_message(code, key); break;
    case Code::wrong_merchant:
        t.message = merchant
                        ? "wrong_merchant: key " + key + " does not belong to merchant " + uuid_to_string(*merchant)
                        : "wrong_merchant: no merchant was given for key " + key;
        break;
    case Code::missing_scope: t.message = missing_scope_message("key " + key, scope.value_or("")); break;
    case Code::unknown_scope: {
        ScopeName parsed;
        if (!scope) {
            t.message = "unknown_scope: no scope was given";
        } else if (!parse_scope(*scope, parsed)) {
            t.message = "unknown_scope: the scope is not of the form resource:action";
        } else {
            t.message = "unknown_scope: scope \"" + std::string(*scope) + "\" is not in the catalog";
            t.hint = scope_suggestion(catalog, *scope);
        }
        break;
    }
    }
    return t;
}

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
