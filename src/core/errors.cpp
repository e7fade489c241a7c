#include "errors.hpp"

namespace flint {

const char *code_name(Code code) {
    switch (code) {
    case Code::ok: return "ok";
    case Code::malformed_key: return "malformed_key";
    case Code::invalid_key: return "invalid_key";
    case Code::key_revoked: return "key_revoked";
    case Code::key_expired: return "key_expired";
    case Code::missing_scope: return "missing_scope";
    case Code::wrong_merchant: return "wrong_merchant";
    case Code::merchant_suspended: return "merchant_suspended";
    case Code::unknown_scope: return "unknown_scope";
    case Code::log_queue_full: return "log_queue_full";
    case Code::key_disabled: return "key_disabled";
    case Code::rate_limited: return "rate_limited";
    case Code::usage_exceeded: return "usage_exceeded";
    case Code::ip_not_allowed: return "ip_not_allowed";
    case Code::leak_reported: return "leak_reported";
    }
    return "unknown";
}

const char *code_sqlstate(Code code) {
    switch (code) {
    case Code::ok: return "00000";
    case Code::malformed_key: return "FK001";
    case Code::invalid_key: return "FK002";
    case Code::key_revoked: return "FK003";
    case Code::key_expired: return "FK004";
    case Code::missing_scope: return "FK005";
    case Code::wrong_merchant: return "FK006";
    case Code::merchant_suspended: return "FK007";
    case Code::unknown_scope: return "FK008";
    case Code::log_queue_full: return "53000";
    case Code::key_disabled: return "FK012";
    case Code::rate_limited: return "FK009";
    case Code::usage_exceeded: return "FK010";
    case Code::ip_not_allowed: return "FK011";
    case Code::leak_reported: return "00000";
    }
    return "XX000";
}

std::string key_failure_message(Code code, std::string_view shown_key) {
    const std::string key(shown_key);
    switch (code) {
    case Code::invalid_key: return "invalid_key: key " + key + " is not valid";
    case Code::key_revoked: return "key_revoked: key " + key + " has been revoked";
    case Code::key_expired: return "key_expired: key " + key + " has expired";
    case Code::merchant_suspended: return "merchant_suspended: the merchant of key " + key + " is suspended";
    case Code::key_disabled: return "key_disabled: key " + key + " is disabled";
    case Code::ip_not_allowed: return "ip_not_allowed: key " + key + " may not be used from this address";
    case Code::rate_limited: return "rate_limited: key " + key + " is over its rate limit";
    case Code::usage_exceeded: return "usage_exceeded: key " + key + " has no usage left for this call";
    default: return std::string(code_name(code)) + ": key " + key;
    }
}

std::string missing_scope_message(std::string_view who, std::string_view scope) {
    return "missing_scope: " + std::string(who) + " lacks scope \"" + std::string(scope) + "\"";
}

} // namespace flint
