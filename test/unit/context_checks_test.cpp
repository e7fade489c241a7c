#include "context_checks.hpp"

#include <gtest/gtest.h>

using namespace flint;

namespace {
const std::vector<std::string> kCatalog = {"payments:read", "payments:write", "refunds:read", "refunds:write"};
const std::vector<std::string> kHeld = {"payments:write"};
ContextView live_ctx() {
    ContextView c;
    c.display_prefix = "fk_live_3xQabcde";
    c.merchant_id[0] = 1;
    c.scopes = &kHeld;
    return c;
}
RowMerchant row(uint8_t merchant) {
    RowMerchant r;
    r.touched = r.present = true;
    r.id[0] = merchant;
    return r;
}
} // namespace

TEST(ContextChecks, RequiredScope) {
    ContextView c = live_ctx();
    EXPECT_EQ(check_required_scope(&c, "payments:read", kCatalog).code, Code::ok) << "write grants read";
    CheckResult missing = check_required_scope(&c, "refunds:write", kCatalog);
    EXPECT_EQ(missing.code, Code::missing_scope);
    EXPECT_EQ(missing.message, "missing_scope: key fk_live_3xQabcde\xE2\x80\xA6 lacks scope \"refunds:write\"");
    CheckResult none = check_required_scope(nullptr, "payments:read", kCatalog);
    EXPECT_EQ(none.code, Code::missing_scope);
    EXPECT_EQ(none.hint, kAuthenticateFirstHint);
    CheckResult typo = check_required_scope(&c, "payments:wirte", kCatalog);
    EXPECT_EQ(typo.code, Code::unknown_scope) << "checked before whether the context holds it";
    EXPECT_EQ(typo.hint, "Did you mean \"payments:write\"?");
    EXPECT_EQ(check_required_scope(nullptr, std::nullopt, kCatalog).code, Code::unknown_scope);
}

TEST(ContextChecks, GuardedWrite) {
    ContextView c = live_ctx();
    RowMerchant untouched;
    EXPECT_EQ(check_guarded_write(&c, "payments:write", "payments", untouched, row(1)).code, Code::ok);
    EXPECT_EQ(check_guarded_write(&c, "", "payments", row(1), row(1)).code, Code::ok) << "no scope: any key";
    CheckResult other = check_guarded_write(&c, "payments:write", "payments", row(1), row(2));
    EXPECT_EQ(other.code, Code::wrong_merchant) << "an UPDATE moving a row to another merchant";
    EXPECT_NE(other.message.find(", not 02000000-0000-0000-0000-000000000000"), std::string::npos) << other.message;
    RowMerchant null_row;
    null_row.touched = true;
    EXPECT_EQ(check_guarded_write(&c, "", "payments", untouched, null_row).code, Code::wrong_merchant);
    EXPECT_EQ(check_guarded_write(&c, "refunds:write", "payments", untouched, row(1)).code, Code::missing_scope);
    CheckResult anon = check_guarded_write(nullptr, "", "payments", untouched, row(1));
    EXPECT_EQ(anon.code, Code::missing_scope);
    EXPECT_EQ(anon.message, "missing_scope: this transaction is not authenticated; writes to payments need a key");
    c.mode = Mode::test;
    CheckResult test = check_guarded_write(&c, "payments:write", "payments", untouched, row(1));
    EXPECT_EQ(test.code, Code::missing_scope) << "protected tables hold live data";
    EXPECT_NE(test.message.find("cannot write live data in payments"), std::string::npos);
}
