#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "error_context.hpp"

using flint::drop_internal_frames;

namespace {
std::string dropped(std::string s) {
    std::vector<char> buf(s.begin(), s.end());
    buf.push_back('\0');
    drop_internal_frames(buf.data());
    return buf.data();
}
} // namespace

TEST(ErrorContext, DropsTheHelperFrameAndTheStatementThatCalledIt) {
    EXPECT_EQ(dropped("PL/pgSQL function flint._refuse_revoked(flint.api_keys,text) line 4 at RAISE\n"
                      "SQL statement \"SELECT flint._refuse_revoked(k, 'revoke')\"\n"
                      "PL/pgSQL function flint_revoke_key(uuid,text) line 10 at PERFORM"),
              "PL/pgSQL function flint_revoke_key(uuid,text) line 10 at PERFORM");
}

TEST(ErrorContext, KeepsPublicFramesInOrder) {
    const std::string ctx = "PL/pgSQL function flint_update_key(uuid,text,text[]) line 3 at RAISE\n"
                            "PL/pgSQL function my_app_helper() line 2 at PERFORM";
    EXPECT_EQ(dropped(ctx), ctx);
}

TEST(ErrorContext, InternalFramesBetweenPublicOnes) {
    EXPECT_EQ(dropped("PL/pgSQL function flint._checked_text(text,text,integer) line 5 at RAISE\n"
                      "PL/pgSQL function public.flint_create_key(uuid,text) line 9 at assignment\n"
                      "SQL function \"flint._x\" statement 1\n"
                      "PL/pgSQL function app() line 1 at PERFORM"),
              "PL/pgSQL function public.flint_create_key(uuid,text) line 9 at assignment\n"
              "PL/pgSQL function app() line 1 at PERFORM");
}

TEST(ErrorContext, OnlyInternalFramesLeaveNothing) {
    EXPECT_EQ(dropped("PL/pgSQL function flint._a() line 1 at RAISE\nSQL statement \"SELECT flint._a()\""), "");
}

TEST(ErrorContext, NullAndEmptyAndNoMatch) {
    drop_internal_frames(nullptr);
    EXPECT_EQ(dropped(""), "");
    EXPECT_EQ(dropped("flint.api_keys\nflint_x"), "flint.api_keys\nflint_x");
    EXPECT_EQ(dropped("a\n\nb"), "a\n\nb"); // empty lines are kept as they were
}
