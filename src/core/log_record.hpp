// One request-log row as it travels through shared memory: fixed size, plain
// data, no pointers, never the secret. Postgres-free.
#pragma once
#include <cstdint>
#include <optional>
#include <string_view>
#include <string>

#include "errors.hpp"
#include "token.hpp"

namespace flint {

// Which SQL entry point wrote the row.
enum class LogSource : uint8_t { verify, check, authenticate, require_scope, guarded_write, report_leaked };
const char *log_source_name(LogSource source);

struct LogRecord {
    int64_t at = 0; // Postgres TimestampTz
    int32_t backend_pid = 0;
    Code outcome = Code::ok;
    LogSource source = LogSource::verify;
    bool has_key_id = false;
    bool has_merchant_id = false;
    bool has_requested_merchant = false;
    Uuid key_id{};
    Uuid merchant_id{};
    Uuid requested_merchant{};
    char display_prefix[token_layout::kDisplayPrefixLen + 1] = {};
    char scope[64] = {};
    uint8_t client_family = 0; // 0: none (Unix socket), 4: IPv4, 6: IPv6
    uint8_t client_ip[16] = {};
    bool client_given = false; // the caller passed client_ip: log it, not the connection's
    int32_t cost = 1;          // units the call weighed against a quota
    char application_name[64] = {};
    char request_id[64] = {};
};

// Copies text into a fixed field, cut at the field's size on a UTF-8
// character boundary and always NUL-terminated.
void copy_field(char *dst, size_t size, const char *src, size_t len);
template <size_t N> void copy_field(char (&dst)[N], const char *src, size_t len) { copy_field(dst, N, src, len); }

// Copies the scope a check asked for into the record, but only text shaped
// like a scope: a secret passed in the wrong argument is never logged.
void log_scope(LogRecord &record, std::optional<std::string_view> scope);

// The rows in PostgreSQL's binary COPY format, in the order of
// kCopyColumns (cost only when with_cost: a 1.1 table has no such column).
// The worker feeds this to COPY FROM with that column list: no text
// parsing, multi-row inserts, and columns a later version adds are no matter.
inline constexpr const char *kCopyColumns[] = {
    "at",       "key_id",      "display_prefix",   "merchant_id", "requested_merchant", "scope",  "outcome",
    "sqlstate", "client_addr", "application_name", "request_id",  "backend_pid",        "source", "cost"};
// `order`, when given, lists the rows' indexes in the order to encode them.
// `server`, when given, is one more column after them (kServerColumn): the
// server that verified the rows (1.2 tables have it).
inline constexpr const char *kServerColumn = "server";
std::string encode_copy_binary(const LogRecord *rows, size_t count, bool with_cost = true,
                               const uint32_t *order = nullptr, const char *server = nullptr);

} // namespace flint
