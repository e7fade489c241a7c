// The transaction's auth context (SPEC section 8): set by flint_authenticate,
// held only in this backend's memory (no GUC, nothing SET can reach), and
// cleared at commit, at rollback, and when the subtransaction that set it aborts.
#pragma once
#include "pg_includes.hpp"

#include "token.hpp"

namespace flint::pg {

struct AuthContext {
    Uuid key_id{};
    Uuid merchant_id{};
    Mode mode = Mode::live;
    std::string display_prefix;
    std::vector<std::string> scopes;
    SubTransactionId set_in = InvalidSubTransactionId;
};

// The hint of an error raised because the transaction has no auth context.
inline constexpr const char *kAuthenticateFirstHint = "Call flint_authenticate(secret) first in this transaction.";

// nullptr when this transaction has not authenticated.
const AuthContext *current_auth();
void set_auth(AuthContext context);
void clear_auth();

void register_xact_callbacks();

} // namespace flint::pg
