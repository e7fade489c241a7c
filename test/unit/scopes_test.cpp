#include <gtest/gtest.h>

#include "scopes.hpp"

using namespace flint;

namespace {
const std::vector<std::string> kCatalog = {"payments:read", "payments:write", "refunds:read",
                                           "refunds:write", "keys:read",      "keys:write"};
}

TEST(Scopes, Parse) {
    ScopeName s;
    EXPECT_TRUE(parse_scope("payments:read", s));
    EXPECT_EQ(s.resource, "payments");
    EXPECT_EQ(s.action, "read");
    EXPECT_TRUE(parse_scope("payments:*", s));
    EXPECT_TRUE(parse_scope("a1_b:c_2", s));
    for (const char *bad : {"", ":", "payments", "payments:", ":read", "Payments:read", "payments:read:x",
                            "pay ments:read", "1pay:read", "*:read", "payments:**", "payments:r*", "paymënts:read"})
        EXPECT_FALSE(parse_scope(bad, s)) << bad;
    EXPECT_FALSE(parse_scope(std::string(60, 'a') + ":read", s));
}

TEST(Scopes, WriteImpliesRead) {
    std::vector<std::string> held = {"payments:write"};
    EXPECT_TRUE(scope_grants(held, "payments:write"));
    EXPECT_TRUE(scope_grants(held, "payments:read"));
    EXPECT_FALSE(scope_grants(held, "refunds:read"));
    EXPECT_FALSE(scope_grants({"payments:read"}, "payments:write"));
}

TEST(Scopes, Wildcard) {
    std::vector<std::string> held = {"payments:*"};
    EXPECT_TRUE(scope_grants(held, "payments:read"));
    EXPECT_TRUE(scope_grants(held, "payments:write"));
    EXPECT_TRUE(scope_grants(held, "payments:capture"));
    EXPECT_FALSE(scope_grants(held, "payouts:read"));
    EXPECT_FALSE(scope_grants(held, "payments:*")); // a check asks for a concrete scope
    EXPECT_FALSE(scope_grants({}, "payments:read"));
    EXPECT_FALSE(scope_grants({"payments:read"}, "payments"));
}

TEST(Scopes, ResourceIsMatchedWhole) {
    EXPECT_FALSE(scope_grants({"pay:*"}, "payments:read"));
    EXPECT_FALSE(scope_grants({"payments_x:write"}, "payments:read"));
}

TEST(Scopes, Cover) {
    std::vector<std::string> held = {"payments:write", "refunds:*"};
    EXPECT_TRUE(scopes_cover(held, "payments:read"));
    EXPECT_TRUE(scopes_cover(held, "payments:write"));
    EXPECT_FALSE(scopes_cover(held, "payments:*"));
    EXPECT_TRUE(scopes_cover(held, "refunds:*"));
    EXPECT_FALSE(scopes_cover(held, "keys:read"));
    EXPECT_FALSE(scopes_cover(held, "garbage"));
}

TEST(Scopes, Catalog) {
    EXPECT_TRUE(scope_in_catalog(kCatalog, "payments:read"));
    EXPECT_TRUE(scope_in_catalog(kCatalog, "payments:*"));
    EXPECT_FALSE(scope_in_catalog(kCatalog, "payouts:*"));
    EXPECT_FALSE(scope_in_catalog(kCatalog, "payments:wirte"));
    EXPECT_FALSE(scope_in_catalog(kCatalog, ""));
}

TEST(Scopes, ClosestSuggestion) {
    EXPECT_EQ(closest_scope(kCatalog, "payments:wirte"), "payments:write");
    EXPECT_EQ(closest_scope(kCatalog, "refund:write"), "refunds:write");
    EXPECT_EQ(closest_scope(kCatalog, "Keys:read"), "keys:read");
    EXPECT_EQ(closest_scope(kCatalog, "completely:different"), "");
    EXPECT_EQ(closest_scope({}, "payments:read"), "");
    EXPECT_EQ(closest_scope(kCatalog, std::string(10000, 'x')), "");
}

TEST(Scopes, EditDistance) {
    EXPECT_EQ(edit_distance("", ""), 0u);
    EXPECT_EQ(edit_distance("abc", ""), 3u);
    EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
    EXPECT_EQ(edit_distance("flaw", "lawn"), 2u);
}
