#include <gtest/gtest.h>

#include <vector>

#include "usage_rollup.hpp"

using namespace flint;

namespace {
Uuid id_of(uint8_t n) {
    Uuid id{};
    id[0] = n;
    id[15] = 0x7e;
    return id;
}
LogRecord row(int64_t at, int merchant, int key, Code outcome, int32_t cost = 1) {
    LogRecord r;
    r.at = at;
    r.outcome = outcome;
    r.cost = cost;
    r.has_merchant_id = merchant != 0;
    if (merchant)
        r.merchant_id = id_of(static_cast<uint8_t>(merchant));
    r.has_key_id = key != 0;
    if (key)
        r.key_id = id_of(static_cast<uint8_t>(key));
    return r;
}
} // namespace

TEST(UsageRollup, MinuteStartRoundsDownOnBothSidesOfTheEpoch) {
    EXPECT_EQ(minute_start(0), 0);
    EXPECT_EQ(minute_start(59'999'999), 0);
    EXPECT_EQ(minute_start(60'000'000), 60'000'000);
    EXPECT_EQ(minute_start(-1), -60'000'000);
    EXPECT_EQ(minute_start(-60'000'000), -60'000'000);
}

TEST(UsageRollup, OneGroupPerMinuteMerchantKeyAndOutcome) {
    const int64_t m0 = 1000 * kMicrosPerMinute;
    std::vector<LogRecord> rows = {
        row(m0 + 1, 1, 10, Code::ok, 3),
        row(m0 + 2, 1, 10, Code::ok, 2),             // same group
        row(m0 + 3, 1, 10, Code::missing_scope),     // other outcome
        row(m0 + kMicrosPerMinute, 1, 10, Code::ok), // next minute
        row(m0 + 4, 2, 20, Code::ok),                // other merchant and key
        row(m0 + 5, 0, 0, Code::malformed_key),
        row(m0 + 6, 0, 0, Code::malformed_key), // no merchant
    };
    UsageRollup rollup;
    ASSERT_TRUE(rollup.add_copy_binary(encode_copy_binary(rows.data(), rows.size()), true));
    auto groups = rollup.groups();
    ASSERT_EQ(groups.size(), 5u);
    int64_t requests = 0, cost = 0;
    for (const auto &g : groups) {
        requests += g.requests;
        cost += g.cost;
    }
    EXPECT_EQ(requests, 7);
    EXPECT_EQ(cost, 3 + 2 + 5);
    // Sorted: minute, then no merchant before merchants.
    EXPECT_EQ(groups[0].minute, m0);
    EXPECT_FALSE(groups[0].has_merchant);
    EXPECT_FALSE(groups[0].has_key);
    EXPECT_EQ(groups[0].outcome, "malformed_key");
    EXPECT_EQ(groups[0].requests, 2);
    EXPECT_EQ(groups.back().minute, m0 + kMicrosPerMinute);
    const auto ok_group = std::find_if(groups.begin(), groups.end(), [&](const UsageGroup &g) {
        return g.has_key && g.key == id_of(10) && g.outcome == "ok" && g.minute == m0;
    });
    ASSERT_NE(ok_group, groups.end());
    EXPECT_EQ(ok_group->requests, 2);
    EXPECT_EQ(ok_group->cost, 5);
    EXPECT_EQ(ok_group->merchant, id_of(1));
}

TEST(UsageRollup, BatchesAddUpAndAServerColumnIsIgnored) {
    std::vector<LogRecord> rows = {row(5, 1, 10, Code::ok, 4)};
    UsageRollup rollup;
    ASSERT_TRUE(rollup.add_copy_binary(encode_copy_binary(rows.data(), 1, true, nullptr, "standby1"), true));
    ASSERT_TRUE(rollup.add_copy_binary(encode_copy_binary(rows.data(), 1, true), true));
    ASSERT_EQ(rollup.size(), 1u);
    EXPECT_EQ(rollup.groups()[0].requests, 2);
    EXPECT_EQ(rollup.groups()[0].cost, 8);
}

TEST(UsageRollup, WithoutACostColumnEachRowCostsOne) {
    std::vector<LogRecord> rows = {row(5, 1, 10, Code::ok, 9)};
    UsageRollup rollup;
    ASSERT_TRUE(rollup.add_copy_binary(encode_copy_binary(rows.data(), 1, false), false));
    EXPECT_EQ(rollup.groups()[0].cost, 1);
}

TEST(UsageRollup, MalformedDataAddsNothing) {
    std::vector<LogRecord> rows = {row(5, 1, 10, Code::ok), row(6, 1, 10, Code::ok)};
    const std::string good = encode_copy_binary(rows.data(), rows.size());
    UsageRollup rollup;
    EXPECT_FALSE(rollup.add_copy_binary("", true));
    EXPECT_FALSE(rollup.add_copy_binary("PGCOPY\n\xff\r\n", true));
    for (size_t cut = 0; cut < good.size(); ++cut) // every truncation, including the missing trailer
        EXPECT_FALSE(rollup.add_copy_binary(std::string_view(good).substr(0, cut), true)) << cut;
    std::string wrong_width = good;
    wrong_width[19 + 2 + 3] = 7; // the first row's `at` claims 7 bytes
    EXPECT_FALSE(rollup.add_copy_binary(wrong_width, true));
    EXPECT_EQ(rollup.size(), 0u);
    // A batch without cost read as one with it: too few fields.
    const std::string no_cost = encode_copy_binary(rows.data(), rows.size(), false);
    EXPECT_FALSE(rollup.add_copy_binary(no_cost, true));
    EXPECT_EQ(rollup.size(), 0u);
}

TEST(UsageRollup, OnlyRowsBeforeTheMarkWhenOneIsGiven) {
    const int64_t m0 = 50 * kMicrosPerMinute;
    std::vector<LogRecord> rows = {row(m0 - 1, 1, 10, Code::ok), row(m0, 1, 10, Code::ok),
                                   row(m0 + 5, 1, 10, Code::ok)};
    UsageRollup rollup;
    ASSERT_TRUE(rollup.add_copy_binary(encode_copy_binary(rows.data(), rows.size()), true, m0));
    ASSERT_EQ(rollup.size(), 1u);
    EXPECT_EQ(rollup.groups()[0].minute, m0 - kMicrosPerMinute);
    EXPECT_EQ(rollup.groups()[0].requests, 1);
    UsageRollup none;
    ASSERT_TRUE(none.add_copy_binary(encode_copy_binary(rows.data(), rows.size()), true, INT64_MIN));
    EXPECT_EQ(none.size(), 0u);
}
