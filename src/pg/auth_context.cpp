#include "auth_context.hpp"

#include "datums.hpp"
#include "error_boundary.hpp"
#include "key_store.hpp"
#include "scopes.hpp"

namespace flint::pg {

namespace {
std::optional<AuthContext> context;

void on_xact(XactEvent event, void *) {
    switch (event) {
    case XACT_EVENT_COMMIT:
    case XACT_EVENT_PARALLEL_COMMIT:
    case XACT_EVENT_ABORT:
    case XACT_EVENT_PARALLEL_ABORT:
    case XACT_EVENT_PREPARE: context.reset(); break;
    default: break;
    }
}

void on_subxact(SubXactEvent event, SubTransactionId sub, SubTransactionId parent, void *) {
    if (!context || context->set_in != sub)
        return;
    // Fail closed: the context a rolled-back subtransaction set is gone, and
    // nothing from before it is brought back. A released one passes to its parent.
    if (event == SUBXACT_EVENT_ABORT_SUB)
        context.reset();
    else if (event == SUBXACT_EVENT_COMMIT_SUB)
        context->set_in = parent;
}
} // namespace

const AuthContext *current_auth() { return context ? &*context : nullptr; }

Code recheck_auth() {
    if (!context)
        return Code::ok;
    const KeyRecord *key = find_key(context->key_id);
    VerifyRequest key_only;
    key_only.check_merchant_and_scope = false;
    key_only.client = context->client; // an allowlist added since applies too
    static const std::vector<std::string> no_catalog;
    Code code = decide(key, context->mode, context->token_digest, key_only, no_catalog, GetCurrentTimestamp()).code;
    if (code == Code::ok && key->scopes != context->scopes)
        context->scopes = key->scopes; // a committed scope change applies to the next check
    return code;
}

void raise_dead_context(Code code) {
    throw FlintError(code_sqlstate(code), key_failure_message(code, shown_prefix(context->display_prefix)),
                     "The transaction authenticated with this key before the change was committed.", "",
                     /*hide_statement=*/true);
}

const AuthContext *live_auth() {
    Code code = recheck_auth();
    if (code != Code::ok)
        raise_dead_context(code);
    return current_auth();
}

void set_auth(AuthContext c) {
    c.set_in = GetCurrentSubTransactionId();
    context = std::move(c);
}

void clear_auth() { context.reset(); }

void auth_context_init() {
    RegisterXactCallback(on_xact, nullptr);
    RegisterSubXactCallback(on_subxact, nullptr);
}

// The context readers: what RLS policies and applications ask of the
// context, each after re-checking its key (live_auth).
namespace {

// NULL outside a context; else what `read` takes from the live context.
template <class Read> Datum read_context(FunctionCallInfo fcinfo, Read read) {
    const AuthContext *ctx = live_auth();
    if (!ctx)
        PG_RETURN_NULL();
    return read(*ctx);
}

Datum current_merchant_body(FunctionCallInfo fcinfo) {
    return read_context(fcinfo, [](const AuthContext &c) { return uuid_datum(c.merchant_id); });
}
Datum current_key_body(FunctionCallInfo fcinfo) {
    return read_context(fcinfo, [](const AuthContext &c) { return uuid_datum(c.key_id); });
}
Datum current_scopes_body(FunctionCallInfo fcinfo) {
    return read_context(fcinfo, [](const AuthContext &c) { return text_array_datum(c.scopes); });
}
Datum current_mode_body(FunctionCallInfo fcinfo) {
    return read_context(fcinfo, [](const AuthContext &c) { return text_datum(mode_name(c.mode)); });
}
Datum context_via_grace_body(FunctionCallInfo fcinfo) {
    return read_context(fcinfo, [](const AuthContext &c) { return BoolGetDatum(c.via_previous_secret); });
}

// The context's merchant even after its key died: what the key_info view
// shows of roles depends on it, and a key that revoked itself still reads
// its own row (flint._context_merchant).
Datum context_merchant_body(FunctionCallInfo fcinfo) {
    const AuthContext *ctx = current_auth();
    if (!ctx)
        PG_RETURN_NULL();
    return uuid_datum(ctx->merchant_id);
}

Datum has_scope_body(FunctionCallInfo fcinfo) {
    const AuthContext *ctx = live_auth();
    auto scope = text_arg(fcinfo, 0);
    return BoolGetDatum(ctx && scope && scope_grants(ctx->scopes, *scope));
}

} // namespace
} // namespace flint::pg

using namespace flint::pg;
FLINT_SQL_FUNCTION(flint_current_merchant, current_merchant_body)
FLINT_SQL_FUNCTION(flint_current_key, current_key_body)
FLINT_SQL_FUNCTION(flint_current_scopes, current_scopes_body)
FLINT_SQL_FUNCTION(flint_current_mode, current_mode_body)
FLINT_SQL_FUNCTION(flint_has_scope, has_scope_body)
FLINT_SQL_FUNCTION(flint_context_via_grace, context_via_grace_body)
FLINT_SQL_FUNCTION(flint_context_merchant, context_merchant_body)
