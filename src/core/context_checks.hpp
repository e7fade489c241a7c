// The checks made on an authenticated transaction's context, Postgres-free:
// flint_require_scope and the guarded-write trigger decide here, with the
// message they raise. (The context's key is re-checked before, by the
// Postgres layer: a dead key fails with its own code first.)
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "errors.hpp"
#include "token.hpp"

namespace flint {

// What a check needs to know of the context (nullptr: not authenticated).
struct ContextView {
    std::string_view display_prefix;
    Mode mode = Mode::live;
    Uuid merchant_id{};
    const std::vector<std::string> *scopes = nullptr;
};

struct CheckResult {
    Code code = Code::ok;
    std::string message, hint;
};

inline constexpr const char *kAuthenticateFirstHint = "Call flint_authenticate(secret) first in this transaction.";

// flint_require_scope(scope): unknown_scope for a scope the catalog does not
// list (hint: the closest name), missing_scope when the context lacks it or
// there is no context.
CheckResult check_required_scope(const ContextView *ctx, std::optional<std::string_view> scope,
                                 const std::vector<std::string> &catalog);

// The merchant column of a row a guarded write touches (untouched: the old
// row of an INSERT, the new row of a DELETE).
struct RowMerchant {
    bool touched = false;
    bool present = false; // touched and not NULL
    Uuid id{};
};

// A write to a protected table: a context is needed, of a live key (protected
// tables hold live data), holding write_scope ("" for any), and every row
// touched must be the context's merchant's.
CheckResult check_guarded_write(const ContextView *ctx, std::string_view write_scope, std::string_view table,
                                const RowMerchant &old_row, const RowMerchant &new_row);

} // namespace flint
