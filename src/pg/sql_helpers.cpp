// Internal helpers the install script's management functions call:
// token minting, scope validation, the actor name, cache invalidation.
#include "datums.hpp"
#include "error_boundary.hpp"
#include "key_store.hpp"
#include "last_used_sql.hpp"
#include "limits.hpp"
#include "scopes.hpp"
#include "scrub.hpp"
#include "state.hpp"

extern "C" {
#include "executor/spi.h"
}

namespace flint::pg {

namespace {

std::vector<std::string> text_array_arg(FunctionCallInfo fcinfo, int n, bool *had_null) {
    std::vector<std::string> out;
    *had_null = false;
    if (PG_ARGISNULL(n))
        return out;
    ArrayType *array = PG_GETARG_ARRAYTYPE_P(n);
    Datum *elems = nullptr;
    bool *nulls = nullptr;
    int count = 0;
    pg_guard([&] { deconstruct_array(array, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &count); });
    for (int i = 0; i < count; ++i) {
        if (nulls[i]) {
            *had_null = true;
            continue;
        }
        const text *t = reinterpret_cast<const text *>(DatumGetPointer(elems[i]));
        out.emplace_back(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
    }
    return out;
}

// A fresh token for the (mode text, key_id uuid) arguments: 192 CSPRNG bits
// in the token format; the secret bytes are wiped once formatted.
std::string fresh_token(FunctionCallInfo fcinfo) {
    auto mode_text = text_arg(fcinfo, 0);
    auto id = uuid_arg(fcinfo, 1);
    if (!mode_text || !id)
        throw FlintError("22004", "mode and key id must not be NULL");
    auto mode = parse_mode(*mode_text);
    if (!mode)
        throw FlintError("22023", "unknown key mode; use 'live' or 'test'");
    SecretBytes secret;
    random_bytes(secret.data(), secret.size());
    std::string token = format_token(*mode, *id, secret);
    std::fill(secret.begin(), secret.end(), 0);
    return token;
}

// _new_token(mode text, key_id uuid) -> text: a fresh token for that key id.
Datum new_token_body(FunctionCallInfo fcinfo) {
    std::string token = fresh_token(fcinfo);
    Datum result = text_datum(token);
    std::fill(token.begin(), token.end(), '\0');
    return result;
}

// _mint_token(mode text, key_id uuid) -> (secret, display_prefix,
// secret_hash): the token, the prefix and the digest verification compares,
// all made here once, so no SQL slices or hashes the token a second way.
Datum mint_token_body(FunctionCallInfo fcinfo) {
    std::string token = fresh_token(fcinfo);
    const std::string prefix = display_prefix(token);
    const Digest digest = sha256(token);
    Datum values[3];
    bool nulls[3] = {false, false, false};
    // palloc only (no C++ object is created in here): the copies Postgres owns.
    pg_guard([&] {
        values[0] = PointerGetDatum(cstring_to_text_with_len(token.data(), static_cast<int>(token.size())));
        values[1] = PointerGetDatum(cstring_to_text_with_len(prefix.data(), static_cast<int>(prefix.size())));
        bytea *hash = static_cast<bytea *>(palloc(VARHDRSZ + digest.size()));
        SET_VARSIZE(hash, VARHDRSZ + digest.size());
        std::memcpy(VARDATA(hash), digest.data(), digest.size());
        values[2] = PointerGetDatum(hash);
    });
    std::fill(token.begin(), token.end(), '\0');
    return composite_result(fcinfo, values, nulls);
}

// _check_scopes(scopes text[]) -> text[]: validated against the catalog,
// sorted and without duplicates; unknown_scope (FK008) with a suggestion otherwise.
Datum check_scopes_body(FunctionCallInfo fcinfo) {
    bool had_null = false;
    std::vector<std::string> scopes = text_array_arg(fcinfo, 0, &had_null);
    if (PG_ARGISNULL(0) || had_null)
        throw FlintError("22004", "scopes must not be NULL or contain NULL");
    if (scopes.empty())
        throw FlintError("22023", "a key needs at least one scope");
    const std::vector<std::string> &catalog = scope_catalog();
    for (const std::string &s : scopes) {
        ScopeName shape;
        if (!parse_scope(s, shape))
            throw FlintError("FK008", "unknown_scope: \"" + s.substr(0, 80) + "\" is not of the form resource:action");
        if (!scope_in_catalog(catalog, s)) {
            std::string hint = scope_suggestion(catalog, s);
            throw FlintError("FK008", "unknown_scope: scope \"" + s + "\" is not in the catalog", "",
                             hint.empty() ? "The catalog is the table flint.scopes." : hint);
        }
    }
    std::sort(scopes.begin(), scopes.end());
    scopes.erase(std::unique(scopes.begin(), scopes.end()), scopes.end());
    return text_array_datum(scopes);
}

// _uncovered_scope(held text[], wanted text[]) -> text: the first wanted scope
// that holding `held` does not cover, or NULL when all are covered.
Datum uncovered_scope_body(FunctionCallInfo fcinfo) {
    bool had_null = false;
    std::vector<std::string> held = text_array_arg(fcinfo, 0, &had_null);
    std::vector<std::string> wanted = text_array_arg(fcinfo, 1, &had_null);
    for (const std::string &w : wanted)
        if (!scopes_cover(held, w))
            return text_datum(w);
    PG_RETURN_NULL();
}

// _actor() -> text: the role acting, as SET ROLE left it, even inside a
// SECURITY DEFINER function (which changes current_user, not the outer user).
Datum actor_body(FunctionCallInfo) {
    char *name = nullptr;
    pg_guard([&] { name = GetUserNameFromId(GetOuterUserId(), true); });
    return text_datum(name ? name : "unknown");
}

// _scrub(text) -> text: flint tokens masked after their display prefix.
Datum scrub_body(FunctionCallInfo fcinfo) {
    text *t = PG_GETARG_TEXT_P_COPY(0); // detoasted copy: palloc only, no C++ object alive
    int len = VARSIZE_ANY_EXHDR(t);
    char *s = static_cast<char *>(palloc(len + 1));
    std::memcpy(s, VARDATA_ANY(t), len);
    s[len] = '\0';
    if (scrub_tokens(s) == 0)
        return PointerGetDatum(t);
    return PointerGetDatum(cstring_to_text_with_len(s, len));
}

// Statement trigger on api_keys, merchants and scopes: key caches everywhere
// must reload once this transaction commits. The log worker only ever writes
// last_used_at (and leased quota units), which verification does not read,
// so it skips the bump; so does a standby's forwarded last_used_at, inside
// flint._receive_last_used (the triggers are ALWAYS triggers since 1.3, so
// session_replication_role no longer skips them).
Datum invalidate_trigger_body(FunctionCallInfo fcinfo) {
    if (!CALLED_AS_TRIGGER(fcinfo))
        throw FlintError("39P01", "flint._invalidate_key_cache() may only be called as a trigger");
    if (!in_log_worker && !in_bookkeeping)
        note_keys_changed(RelationGetRelid(reinterpret_cast<TriggerData *>(fcinfo->context)->tg_relation));
    return PointerGetDatum(nullptr);
}

// flint._keys_changed(tbl regclass, ids uuid[]): called by the statement
// triggers on flint.roles and flint.key_roles with the keys a role change
// concerns: at commit, key caches forget just those keys.
Datum keys_changed_body(FunctionCallInfo fcinfo) {
    if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
        throw FlintError("22004", "flint._keys_changed: no argument may be NULL");
    std::vector<Uuid> keys;
    pg_guard([&] {
        Datum *ids;
        bool *nulls;
        int n;
        deconstruct_array(PG_GETARG_ARRAYTYPE_P(1), UUIDOID, UUID_LEN, false, TYPALIGN_CHAR, &ids, &nulls, &n);
        for (int i = 0; i < n; ++i)
            if (!nulls[i]) {
                Uuid id;
                std::memcpy(id.data(), DatumGetUUIDP(ids[i])->data, 16);
                keys.push_back(id);
            }
    });
    note_keys_changed_for(PG_GETARG_OID(0), keys);
    PG_RETURN_VOID();
}

// _receive_last_used(ids uuid[], used_at bigint[]): the last uses a
// standby forwarded (microseconds since 2000-01-01 UTC, TimestampTz's own
// unit), written by the worker's own statement (kRecordLastUsedSql). Pairs
// with a NULL are skipped; arrays of different lengths are refused (a NULL
// time would have become now() + 5 min and hidden the key from
// flint.unused_keys). Bookkeeping: no key cache reloads for it.
Datum receive_last_used_body(FunctionCallInfo fcinfo) {
    const char *mismatch = "ids and used_at must be two arrays of the same length";
    if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
        throw FlintError("22023", mismatch);
    ArrayType *id_array = PG_GETARG_ARRAYTYPE_P(0), *at_array = PG_GETARG_ARRAYTYPE_P(1);
    Datum *ids = nullptr, *ats = nullptr;
    bool *id_nulls = nullptr, *at_nulls = nullptr;
    int nids = 0, nats = 0;
    pg_guard([&] {
        deconstruct_array(id_array, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR, &ids, &id_nulls, &nids);
        deconstruct_array(at_array, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &ats, &at_nulls, &nats);
    });
    if (nids != nats)
        throw FlintError("22023", mismatch);
    int n = 0;
    for (int i = 0; i < nids; ++i)
        if (!id_nulls[i] && !at_nulls[i]) {
            ids[n] = ids[i];
            ats[n++] = ats[i]; // int8 and timestamptz: the same Datum
        }
    pg_guard([&] {
        Oid types[2] = {UUIDARRAYOID, TIMESTAMPTZARRAYOID};
        Datum args[2] = {PointerGetDatum(construct_array(ids, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR)),
                         PointerGetDatum(construct_array(ats, n, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE))};
        SPI_connect();
        in_bookkeeping = true; // reset at transaction end, abort included
        if (SPI_execute_with_args(kRecordLastUsedSql, 2, types, args, nullptr, false, 0) < 0)
            elog(ERROR, "flint_keys: last_used_at update failed");
        in_bookkeeping = false;
        SPI_finish();
    });
    PG_RETURN_VOID();
}

// _bookkeeping_now() -> boolean: this backend is writing bookkeeping only
// (the log worker, or flint._receive_last_used): the first, cheap term of
// the key-events trigger's WHEN clause, before its row comparison.
Datum bookkeeping_now_body(FunctionCallInfo) { PG_RETURN_BOOL(in_log_worker || in_bookkeeping); }

// _quota_period_start(refill_interval text, at timestamptz) -> timestamptz:
// the UTC day or month holding `at`, by the same rule as the lease.
Datum quota_period_start_body(FunctionCallInfo fcinfo) {
    auto name = text_arg(fcinfo, 0);
    auto refill = name ? parse_refill(*name) : std::nullopt;
    if (!refill)
        throw FlintError("22023", "refill_interval must be 'day' or 'month'");
    PG_RETURN_TIMESTAMPTZ(quota_period_start(*refill, PG_GETARG_TIMESTAMPTZ(1)));
}

} // namespace
} // namespace flint::pg

using namespace flint::pg;
// Only the 1.0 and 1.1 SQL call it (flint._new_token, dropped in 1.3): a
// server running this library before ALTER EXTENSION ... UPDATE.
FLINT_SQL_FUNCTION(flint_new_token, new_token_body)
FLINT_SQL_FUNCTION(flint_mint_token, mint_token_body)
FLINT_SQL_FUNCTION(flint_check_scopes, check_scopes_body)
FLINT_SQL_FUNCTION(flint_uncovered_scope, uncovered_scope_body)
FLINT_SQL_FUNCTION(flint_actor, actor_body)
FLINT_SQL_FUNCTION(flint_scrub, scrub_body)
FLINT_SQL_FUNCTION(flint_invalidate_key_cache, invalidate_trigger_body)
FLINT_SQL_FUNCTION(flint_keys_changed, keys_changed_body)
FLINT_SQL_FUNCTION(flint_receive_last_used, receive_last_used_body)
FLINT_SQL_FUNCTION(flint_bookkeeping_now, bookkeeping_now_body)
FLINT_SQL_FUNCTION(flint_quota_period_start, quota_period_start_body)
