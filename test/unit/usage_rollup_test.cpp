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
    int64_t latest_rest = 0;
    ASSERT_TRUE(rollup.add_copy_binary(encode_copy_binary(rows.data(), rows.size()), true, m0, &latest_rest));
    ASSERT_EQ(rollup.size(), 1u);
    EXPECT_EQ(rollup.groups()[0].minute, m0 - kMicrosPerMinute);
    EXPECT_EQ(rollup.groups()[0].requests, 1);
    EXPECT_EQ(latest_rest, m0 + 5); // the newest row left for the worker's roll-up
    UsageRollup none;
    ASSERT_TRUE(none.add_copy_binary(encode_copy_binary(rows.data(), rows.size()), true, INT64_MIN));
    EXPECT_EQ(none.size(), 0u);
    UsageRollup all;
    ASSERT_TRUE(all.add_copy_binary(encode_copy_binary(rows.data(), rows.size()), true, INT64_MAX, &latest_rest));
    EXPECT_EQ(latest_rest, INT64_MIN); // every row added: none left
}

TEST(UsageTally, SlotStartRoundsDownOnBothSidesOfTheEpoch) {
    EXPECT_EQ(UsageTally::slot_start(0), 0);
    EXPECT_EQ(UsageTally::slot_start(1'999'999), 0);
    EXPECT_EQ(UsageTally::slot_start(2'000'000), 2'000'000);
    EXPECT_EQ(UsageTally::slot_start(-1), -2'000'000);
}

TEST(UsageTally, TakesTheSlotsOfAStepAsMinuteGroupsAndKeepsLaterOnes) {
    const int64_t m0 = 1000 * kMicrosPerMinute, s = UsageTally::kSlotMicros;
    UsageTally tally;
    tally.add(row(m0 + 1, 1, 10, Code::ok));              // slot 0
    tally.add(row(m0 + s + 5, 1, 10, Code::ok, 3));       // slot 1, same minute, key and outcome
    tally.add(row(m0 + s + 6, 1, 10, Code::key_revoked)); // slot 1, another outcome
    tally.add(row(m0 + 2 * s, 2, 20, Code::ok));          // slot 2: after the step
    tally.add(row(m0 + 7, 0, 0, Code::malformed_key));    // no merchant, no key
    EXPECT_EQ(tally.size(), 5u);

    auto groups = tally.take(m0, m0 + 2 * s).groups();
    ASSERT_EQ(groups.size(), 3u);
    EXPECT_EQ(groups[0].minute, m0);
    EXPECT_FALSE(groups[0].has_merchant);
    EXPECT_EQ(groups[0].outcome, "malformed_key");
    EXPECT_EQ(groups[0].requests, 1);
    EXPECT_EQ(groups[1].outcome, "key_revoked"); // in (minute, merchant, key, outcome) order
    EXPECT_EQ(groups[2].outcome, "ok");
    EXPECT_EQ(groups[2].requests, 2);
    EXPECT_EQ(groups[2].cost, 4);
    EXPECT_EQ(groups[2].key, id_of(10));
    EXPECT_EQ(tally.size(), 1u); // slot 2 stays for the next step

    groups = tally.take(m0 + 2 * s, m0 + 3 * s).groups();
    ASSERT_EQ(groups.size(), 1u);
    EXPECT_EQ(groups[0].merchant, id_of(2));
    EXPECT_EQ(tally.size(), 0u);
}

TEST(UsageTally, SlotsBeforeFromAreForgottenUncountedAndAPartlyCoveredSlotStays) {
    const int64_t m0 = 1000 * kMicrosPerMinute, s = UsageTally::kSlotMicros;
    UsageTally tally;
    tally.add(row(m0, 1, 10, Code::ok));     // slot 0: counted by another way (a scan)
    tally.add(row(m0 + s, 1, 10, Code::ok)); // slot 1
    EXPECT_EQ(tally.take(m0 + s, m0 + 2 * s).groups().size(), 1u);
    EXPECT_EQ(tally.size(), 0u);

    tally.add(row(m0 + 5 * s, 1, 10, Code::ok));
    tally.forget_before(m0 + 5 * s + 1); // a mark inside the slot: the slot is not wholly before it
    EXPECT_EQ(tally.size(), 1u);
    tally.forget_before(m0 + 6 * s);
    EXPECT_EQ(tally.size(), 0u);
}
