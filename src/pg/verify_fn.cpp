// flint_verify_key, flint_check_key, flint_authenticate, flint_require_scope
// and the leak-report matcher: parse, hash, look up, decide, apply the
// traffic controls, log, and only then raise. (The context readers live in
// auth_context.cpp, the log's status and flush in request_log.cpp.)
#include "auth_context.hpp"
#include "context_checks.hpp"
#include "datums.hpp"
#include "error_boundary.hpp"
#include "key_store.hpp"
#include "request_log.hpp"
#include "scopes.hpp"
#include "state.hpp"
#include "traffic.hpp"

extern "C" {
#include "executor/spi.h"
}

namespace flint::pg {

namespace {

struct Args {
    std::optional<std::string_view> secret;
    std::optional<std::string_view> scope;
    std::optional<Uuid> merchant;
    std::optional<IpAddress> client_ip; // the caller's client_ip argument
    int32 cost = 1;
};

// The outcome of one verification, with the message it raises when not ok.
struct Result {
    Code code = Code::ok;
    std::optional<Uuid> key_id;
    const KeyRecord *key = nullptr;
    Digest digest{};                  // of the presented token, when it parsed
    bool via_previous_secret = false; // matched the pre-rotation secret
    std::string message, detail, hint;
};

void describe(Result &r, const ParseError perr, std::string_view presented_prefix, const Args &a) {
    if (r.code == Code::ok || r.code == Code::log_queue_full)
        return; // the hot path builds no strings
    static const std::vector<std::string> no_catalog;
    FailureText t =
        describe_failure(r.code, perr, shown_prefix(r.key ? std::string_view(r.key->display_prefix) : presented_prefix),
                         a.scope, a.merchant, r.code == Code::unknown_scope ? scope_catalog() : no_catalog);
    r.message = std::move(t.message);
    r.hint = std::move(t.hint);
}

// Everything verification does, for any entry point; never raises on a
// verification failure (only on a Postgres error or a full log queue).
Result verify(const Args &a, LogSource source, bool scoped) {
    Result r;
    LogRecord rec;
    rec.at = GetCurrentTimestamp(); // one clock read: the decision's time and the row's
    rec.source = source;
    ParsedToken parsed;
    ParseError perr = a.secret ? parse_token(*a.secret, parsed) : ParseError::null_input;
    std::string_view presented_prefix;
    if (perr != ParseError::none) {
        r.code = Code::malformed_key;
    } else {
        presented_prefix = a.secret->substr(0, token_layout::kDisplayPrefixLen);
        r.key_id = parsed.key_id;
        r.digest = sha256(*a.secret);
        // Key and catalog from one look at the cache (the catalog only when a
        // scope is checked): a second look could drop the first one's entry.
        static const std::vector<std::string> no_catalog;
        const std::vector<std::string> *catalog = &no_catalog;
        r.key = find_key(parsed.key_id, scoped && a.scope ? &catalog : nullptr);
        VerifyRequest req;
        req.check_merchant_and_scope = scoped;
        req.scope = a.scope;
        req.merchant = a.merchant;
        req.client = a.client_ip ? *a.client_ip : connection_address();
        Decision d = decide(r.key, parsed.mode, r.digest, req, *catalog, rec.at);
        r.code = d.code;
        r.via_previous_secret = d.via_previous_secret;
        if (r.code == Code::ok) { // rates and quota last: a refused call consumes neither
            TrafficVerdict t = check_traffic(*r.key, a.cost, rec.at);
            r.code = t.code;
            r.detail = std::move(t.detail);
        }
        rec.has_key_id = true;
        rec.key_id = parsed.key_id;
        copy_field(rec.display_prefix, presented_prefix.data(), presented_prefix.size());
        if (r.key) {
            rec.has_merchant_id = true;
            rec.merchant_id = r.key->merchant_id;
        }
    }
    if (a.merchant) {
        rec.has_requested_merchant = true;
        rec.requested_merchant = *a.merchant;
    }
    log_scope(rec, a.scope);
    rec.outcome = r.code;
    rec.cost = a.cost;
    if (a.client_ip) { // the address checked is the one logged
        rec.client_given = true;
        rec.client_family = a.client_ip->family;
        std::memcpy(rec.client_ip, a.client_ip->bytes, sizeof rec.client_ip);
    }
    emit_log_record(rec); // throws log_queue_full: fail closed
    describe(r, perr, presented_prefix, a);
    return r;
}

[[noreturn]] void raise(const Result &r) {
    note_refusal_raised();
    throw FlintError(code_sqlstate(r.code), r.message, r.detail, r.hint, /*hide_statement=*/true);
}

// The traffic-control arguments at `at`: client_ip inet (NULL: the
// connection's address) and cost integer (absent: 1).
void traffic_args(FunctionCallInfo fcinfo, int at, Args &a) {
    if (PG_NARGS() <= at)
        return;
    a.client_ip = inet_arg(fcinfo, at);
    if (PG_NARGS() > at + 1) {
        if (PG_ARGISNULL(at + 1))
            throw FlintError("22004", "cost must not be NULL");
        a.cost = PG_GETARG_INT32(at + 1);
        if (a.cost < 0)
            throw FlintError("22023", "cost must not be negative");
    }
}

// verify and check: (secret, scope, merchant [, client_ip, cost])
Args verify_args(FunctionCallInfo fcinfo) {
    Args a{text_arg(fcinfo, 0), text_arg(fcinfo, 1), uuid_arg(fcinfo, 2)};
    traffic_args(fcinfo, 3, a);
    return a;
}

Datum verify_key_body(FunctionCallInfo fcinfo) {
    Result r = verify(verify_args(fcinfo), LogSource::verify, true);
    if (r.code != Code::ok)
        raise(r);
    return uuid_datum(*r.key_id);
}

Datum check_key_body(FunctionCallInfo fcinfo) {
    Result r = verify(verify_args(fcinfo), LogSource::check, true);
    Datum values[4];
    bool nulls[4] = {false, !r.key_id.has_value(), r.code == Code::ok, r.code == Code::ok};
    values[0] = BoolGetDatum(r.code == Code::ok);
    values[1] = r.key_id ? uuid_datum(*r.key_id) : (Datum)0;
    values[2] = r.code == Code::ok ? (Datum)0 : text_datum(code_name(r.code));
    values[3] = r.code == Code::ok ? (Datum)0 : text_datum(code_sqlstate(r.code));
    return composite_result(fcinfo, values, nulls);
}

// A temporary table named like a protected table shadows it for unqualified
// names (pg_temp comes first in every search_path). Behind a transaction
// pooler, one client's temp table would then take the next client's reads
// and writes, without RLS, guard or log. Only looked at when this session
// has a temp schema at all. Fills `name` (NAMEDATALEN) with the first shadow.
bool temp_table_shadows_protected_unsafe(char *name) {
    Oid temp_namespace = InvalidOid, temp_toast = InvalidOid;
    GetTempNamespaceState(&temp_namespace, &temp_toast);
    if (!OidIsValid(temp_namespace))
        return false;
    SPI_connect();
    Oid types[1] = {OIDOID};
    Datum args[1] = {ObjectIdGetDatum(temp_namespace)};
    SPI_execute_with_args("SELECT c.relname::text FROM pg_catalog.pg_class c WHERE c.relnamespace = $1 AND EXISTS ("
                          "  SELECT 1 FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class p ON p.oid = t.tgrelid"
                          "   WHERE t.tgname = 'flint_guard_write' AND p.relname = c.relname AND p.relnamespace <> $1)"
                          " LIMIT 1",
                          1, types, args, nullptr, true, 1);
    bool found = SPI_processed > 0;
    if (found)
        strlcpy(name, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), NAMEDATALEN);
    SPI_finish();
    return found;
}

Datum authenticate_body(FunctionCallInfo fcinfo) {
    Args a{text_arg(fcinfo, 0), std::nullopt, std::nullopt};
    traffic_args(fcinfo, 1, a);
    clear_auth(); // a failed authenticate leaves no context behind
    char shadow[NAMEDATALEN] = {};
    bool shadowed = false;
    pg_guard([&] { shadowed = temp_table_shadows_protected_unsafe(shadow); });
    if (shadowed)
        throw FlintError("42501",
                         std::string("a temporary table \"") + shadow +
                             "\" on this connection shadows a protected table; refusing to authenticate",
                         "",
                         "Revoke TEMPORARY on the database from the application role, and schema-qualify "
                         "protected tables in application SQL.",
                         /*hide_statement=*/true);
    Result r = verify(a, LogSource::authenticate, false);
    if (r.code != Code::ok)
        raise(r);
    AuthContext ctx;
    ctx.key_id = r.key->id;
    ctx.merchant_id = r.key->merchant_id;
    ctx.mode = r.key->mode;
    ctx.display_prefix = r.key->display_prefix;
    ctx.scopes = r.key->scopes;
    ctx.token_digest = r.digest;
    ctx.via_previous_secret = r.via_previous_secret;
    ctx.client = a.client_ip ? *a.client_ip : connection_address();
    set_auth(ctx);

    Datum values[4] = {uuid_datum(ctx.key_id), uuid_datum(ctx.merchant_id), text_datum(mode_name(ctx.mode)),
                       text_array_datum(ctx.scopes)};
    bool nulls[4] = {false, false, false, false};
    return composite_result(fcinfo, values, nulls);
}

// flint._leaked_key(token) -> (key_id, display_prefix): the key whose current
// secret, or pre-rotation secret still in its grace, the token is. The same
// parse, CRC, SHA-256 and constant-time comparisons as verification; one
// log row (source report_leaked, outcome as verification would give it).
Datum leaked_key_body(FunctionCallInfo fcinfo) {
    auto token = text_arg(fcinfo, 0);
    LogRecord rec;
    rec.at = GetCurrentTimestamp();
    rec.source = LogSource::report_leaked;
    rec.cost = 0;
    ParsedToken parsed;
    ParseError perr = token ? parse_token(*token, parsed) : ParseError::null_input;
    bool matched = false;
    const KeyRecord *key = nullptr;
    if (perr != ParseError::none) {
        rec.outcome = Code::malformed_key;
    } else {
        key = find_key(parsed.key_id);
        VerifyRequest key_only;
        key_only.check_merchant_and_scope = false;
        static const std::vector<std::string> no_catalog;
        Decision d = decide(key, parsed.mode, sha256(*token), key_only, no_catalog, rec.at);
        // A pre-rotation secret past its grace is dead: reporting it changes nothing.
        bool dead_previous =
            d.via_previous_secret && (!key->previous_secret_expires_at || rec.at >= *key->previous_secret_expires_at);
        matched = d.code != Code::invalid_key && !dead_previous;
        // A live secret reported is not a use of the key: its own outcome,
        // which last_used_at and the counts of uses never take.
        rec.outcome = !matched ? Code::invalid_key : d.code == Code::ok ? Code::leak_reported : d.code;
        rec.has_key_id = true;
        rec.key_id = parsed.key_id;
        copy_field(rec.display_prefix, token->data(), token_layout::kDisplayPrefixLen);
        if (matched) {
            rec.has_merchant_id = true;
            rec.merchant_id = key->merchant_id;
        }
    }
    emit_log_record(rec);
    Datum values[2] = {matched ? uuid_datum(key->id) : (Datum)0,
                       perr == ParseError::none ? text_datum(rec.display_prefix) : (Datum)0};
    bool nulls[2] = {!matched, perr != ParseError::none};
    return composite_result(fcinfo, values, nulls);
}

// Raises missing_scope (logged) unless the context holds the scope. Outside
// any context it is missing_scope too: there is no key to hold anything.
Datum require_scope_body(FunctionCallInfo fcinfo) {
    const AuthContext *ctx = current_auth();
    auto scope = text_arg(fcinfo, 0);
    Code code = recheck_auth(); // a context whose key died fails with the key's code
    if (code != Code::ok) {
        LogRecord rec = context_log_record(LogSource::require_scope, code);
        log_scope(rec, scope);
        emit_log_record(rec);
        raise_dead_context(code);
    }
    ContextView view;
    if (ctx)
        view = {ctx->display_prefix, ctx->mode, ctx->merchant_id, &ctx->scopes};
    CheckResult check = check_required_scope(ctx ? &view : nullptr, scope, scope_catalog());

    LogRecord rec = context_log_record(LogSource::require_scope, check.code);
    log_scope(rec, scope);
    emit_log_record(rec);
    if (check.code != Code::ok)
        throw FlintError(code_sqlstate(check.code), check.message, "", check.hint, true);
    PG_RETURN_VOID();
}

} // namespace
} // namespace flint::pg

using namespace flint::pg;
FLINT_SQL_FUNCTION(flint_verify_key, verify_key_body)
FLINT_SQL_FUNCTION(flint_check_key, check_key_body)
FLINT_SQL_FUNCTION(flint_authenticate, authenticate_body)
FLINT_SQL_FUNCTION(flint_leaked_key, leaked_key_body)
FLINT_SQL_FUNCTION(flint_require_scope, require_scope_body)
