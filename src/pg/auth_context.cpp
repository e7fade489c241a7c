#include "auth_context.hpp"

#include "guard.hpp"
#include "key_store.hpp"

namespace flint::pg {

namespace {
std::optional<AuthContext> context;

void on_xact(XactEvent event, void *) {
    switch (event) {
    case XACT_EVENT_COMMIT:
    case XACT_EVENT_PARALLEL_COMMIT:
        context.reset();
        key_store_at_commit();
        break;
    case XACT_EVENT_ABORT:
    case XACT_EVENT_PARALLEL_ABORT:
    case XACT_EVENT_PREPARE:
        context.reset();
        key_store_at_abort();
        break;
    case XACT_EVENT_PRE_PREPARE: key_store_before_prepare(); break;
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

void register_xact_callbacks() {
    RegisterXactCallback(on_xact, nullptr);
    RegisterSubXactCallback(on_subxact, nullptr);
}

} // namespace flint::pg
