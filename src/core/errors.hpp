// Stable outcome codes of a verification (README.md, "Errors"). Postgres-free.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace flint {

enum class Code : uint8_t {
    ok = 0,
    malformed_key,      // FK001
    invalid_key,        // FK002
    key_revoked,        // FK003
    key_expired,        // FK004
    missing_scope,      // FK005
    wrong_merchant,     // FK006
    merchant_suspended, // FK007
    unknown_scope,      // FK008
    log_queue_full,     // 53000: the request log could not take the row (fail closed)
    key_disabled,       // FK012
    rate_limited,       // FK009
    usage_exceeded,     // FK010
    ip_not_allowed,     // FK011
    leak_reported,      // 00000: a leak report named the key's live secret (source report_leaked); not a use
};
// The last code: loops over every outcome end here (codes are only added after it).
inline constexpr Code kLastCode = Code::leak_reported;
// Refused verifications: every code but ok and leak_reported.
inline constexpr bool is_refusal(Code code) { return code != Code::ok && code != Code::leak_reported; }

// The code's stable name, as it starts every message and fills request_log.outcome.
const char *code_name(Code code);
// The five-character SQLSTATE ("FK001" ...); "00000" for ok.
const char *code_sqlstate(Code code);

// The message of a failure that concerns the key itself (invalid_key,
// key_revoked, key_expired, merchant_suspended, key_disabled): "key_revoked:
// key fk_live_3xQ… has been revoked". `shown_key` is the key as messages show it.
std::string key_failure_message(Code code, std::string_view shown_key);

// The missing_scope message: `who` is "key fk_live_3xQ…" or a description of
// the caller ("this transaction (not authenticated)").
std::string missing_scope_message(std::string_view who, std::string_view scope);

} // namespace flint
