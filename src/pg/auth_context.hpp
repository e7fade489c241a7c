// The transaction's auth context (README: "Auth context and row-level
// security"): set by flint_authenticate, held only in this backend's memory
// (no GUC, nothing SET can reach), and cleared at commit, at rollback, and
// when the subtransaction that set it aborts.
//
// A context is only as good as its key: every use (the context readers,
// scope checks, guarded writes, key management) re-runs the key checks on
// the key's latest committed state with the digest the context was opened
// with, so a revoke, expiry, suspension or rotation past grace committed
// after flint_authenticate fails the very next use with that key's code, and
// a scope change applies at once. The re-check is a key-cache lookup.
#pragma once
#include "pg_includes.hpp"

#include "digest.hpp"
#include "errors.hpp"
#include "limits.hpp"
#include "token.hpp"

namespace flint::pg {

struct AuthContext {
    Uuid key_id{};
    Uuid merchant_id{};
    Mode mode = Mode::live;
    std::string display_prefix;
    std::vector<std::string> scopes;
    Digest token_digest{};            // SHA-256 of the token it was opened with (as stored; never the secret)
    bool via_previous_secret = false; // opened with a pre-rotation secret in its grace: may not manage keys
    IpAddress client;                 // the address checked at authenticate, checked again on every use
    SubTransactionId set_in = InvalidSubTransactionId;
};

// nullptr when this transaction has not authenticated. The context as it was
// set, unchecked: only for filling log rows.
const AuthContext *current_auth();
// The context after re-checking its key (nullptr when none); throws the
// key's FlintError (key_revoked, key_expired, ...) when it no longer passes.
const AuthContext *live_auth();
// The same re-check, returning the key's code (ok when there is no context)
// for callers that log the outcome before raising it with raise_dead_context.
Code recheck_auth();
[[noreturn]] void raise_dead_context(Code code);
void set_auth(AuthContext context);
void clear_auth();

// _PG_init: the transaction callbacks that end the context.
void auth_context_init();

} // namespace flint::pg
