#include "context_checks.hpp"

#include "scopes.hpp"
#include "verify.hpp"

namespace flint {

CheckResult check_required_scope(const ContextView *ctx, std::optional<std::string_view> scope,
                                 const std::vector<std::string> &catalog) {
    CheckResult r;
    if (!scope || !requestable_scope(catalog, *scope)) {
        r.code = Code::unknown_scope;
        FailureText t = describe_failure(r.code, ParseError::none, "", scope, std::nullopt, catalog);
        r.message = std::move(t.message);
        r.hint = std::move(t.hint);
    } else if (!ctx || !scope_grants(*ctx->scopes, *scope)) {
        r.code = Code::missing_scope;
        r.message = missing_scope_message(
            ctx ? "key " + shown_prefix(ctx->display_prefix) : "this transaction (not authenticated)", *scope);
        if (!ctx)
            r.hint = kAuthenticateFirstHint;
    }
    return r;
}

CheckResult check_guarded_write(const ContextView *ctx, std::string_view write_scope, std::string_view table,
                                const RowMerchant &old_row, const RowMerchant &new_row) {
    CheckResult r;
    if (!ctx) {
        r.code = Code::missing_scope;
        r.message =
            "missing_scope: this transaction is not authenticated; writes to " + std::string(table) + " need a key";
        r.hint = kAuthenticateFirstHint;
        return r;
    }
    const std::string key = shown_prefix(ctx->display_prefix);
    if (ctx->mode != Mode::live) {
        r.code = Code::missing_scope;
        r.message = "missing_scope: test key " + key + " cannot write live data in " + std::string(table);
    } else if (!write_scope.empty() && !scope_grants(*ctx->scopes, write_scope)) {
        r.code = Code::missing_scope;
        r.message = missing_scope_message("key " + key, write_scope);
    } else {
        for (const RowMerchant *row : {&old_row, &new_row})
            if (row->touched && (!row->present || row->id != ctx->merchant_id)) {
                r.code = Code::wrong_merchant;
                r.message = "wrong_merchant: key " + key + " acts for merchant " + uuid_to_string(ctx->merchant_id) +
                            ", not " + (row->present ? uuid_to_string(row->id) : std::string("NULL"));
                break;
            }
    }
    return r;
}

} // namespace flint
