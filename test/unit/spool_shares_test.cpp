#include <gtest/gtest.h>

#include <vector>

#include "spool_shares.hpp"

using namespace flint;

namespace {
Uuid merchant(uint8_t n) {
    Uuid id{};
    id[0] = n;
    id[15] = 0x5a;
    return id;
}
std::vector<LogRecord> rows_of(uint8_t m, size_t n, bool known_key = true) {
    std::vector<LogRecord> rows(n);
    for (auto &r : rows) {
        r.has_merchant_id = known_key;
        if (known_key)
            r.merchant_id = merchant(m);
        r.has_requested_merchant = true;
        r.requested_merchant = merchant(m);
    }
    return rows;
}
} // namespace

TEST(SpoolShares, NobodyIsOverWhileTheSpoolIsAtMostHalfFull) {
    SpoolShares s;
    auto a = rows_of(1, 500);
    s.add(a.data(), a.size());
    // 500 of 1,000 rows: half full, one merchant holds it all, still allowed.
    EXPECT_TRUE(s.over_share(500, 1000, 10, 16).empty());
    EXPECT_EQ(s.over_share(501, 1000, 10, 16), std::vector<Uuid>{merchant(1)});
}

TEST(SpoolShares, OnlyTheMerchantsPastTheirShareLargestFirst) {
    SpoolShares s;
    auto a = rows_of(1, 400), b = rows_of(2, 150), c = rows_of(3, 100);
    s.add(a.data(), a.size());
    s.add(b.data(), b.size());
    s.add(c.data(), c.size());
    // capacity 1,000, share 10%: more than 100 rows is over; exactly 100 is not.
    EXPECT_EQ(s.over_share(650, 1000, 10, 16), (std::vector<Uuid>{merchant(1), merchant(2)}));
    EXPECT_EQ(s.over_share(650, 1000, 10, 1), std::vector<Uuid>{merchant(1)});
    EXPECT_EQ(s.over_share(650, 1000, 50, 16), std::vector<Uuid>{});
}

TEST(SpoolShares, RemovedRowsGiveTheShareBack) {
    SpoolShares s;
    auto a = rows_of(1, 300);
    s.add(a.data(), a.size());
    EXPECT_EQ(s.rows_of(merchant(1)), 300u);
    s.remove(a.data(), 250);
    EXPECT_EQ(s.rows_of(merchant(1)), 50u);
    EXPECT_TRUE(s.over_share(600, 1000, 10, 16).empty());
    s.remove(a.data(), 50);
    EXPECT_EQ(s.rows_of(merchant(1)), 0u);
    s.remove(a.data(), 10); // rows counted before a restart: ignored, never below zero
    EXPECT_EQ(s.rows_of(merchant(1)), 0u);
}

TEST(SpoolShares, RowsWithoutAKeyShareTheZeroIdNeverTheRequestedMerchant) {
    SpoolShares s;
    auto garbage = rows_of(2, 400, false); // a flood of unknown keys naming merchant 2
    auto b = rows_of(2, 50);
    s.add(garbage.data(), garbage.size());
    s.add(b.data(), b.size());
    EXPECT_EQ(s.rows_of(Uuid{}), 400u);
    EXPECT_EQ(s.rows_of(merchant(2)), 50u);
    EXPECT_EQ(s.over_share(600, 1000, 10, 16), std::vector<Uuid>{Uuid{}});
    s.clear();
    EXPECT_EQ(s.rows_of(Uuid{}), 0u);
}

TEST(SpoolShares, ShareIsClampedToOneToHundredPercent) {
    SpoolShares s;
    auto a = rows_of(1, 20);
    s.add(a.data(), a.size());
    EXPECT_EQ(s.over_share(600, 1000, 0, 16), std::vector<Uuid>{merchant(1)}); // 0 -> 1%: 10 rows
    EXPECT_EQ(s.over_share(600, 1000, 500, 16), std::vector<Uuid>{});          // 500 -> 100%
}

TEST(SpoolShares, AFullShareIsNeverSpentEvenPastTheEstimatedCapacity) {
    SpoolShares s;
    auto a = rows_of(1, 1200);
    s.add(a.data(), a.size());
    // 1,200 rows spooled where the estimate said 1,000 fit: one merchant
    // holding all of them has not spent a 100% share, and has spent a 50% one.
    EXPECT_EQ(s.over_share(1200, 1000, 100, 16), std::vector<Uuid>{});
    EXPECT_EQ(s.over_share(1200, 1000, 50, 16), std::vector<Uuid>{merchant(1)});
}
