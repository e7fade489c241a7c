#include "limits.hpp"

#include <gtest/gtest.h>

using namespace flint;

namespace {
Cidr v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint8_t bits) {
    Cidr n;
    n.family = 4;
    n.bits = bits;
    n.bytes[0] = a, n.bytes[1] = b, n.bytes[2] = c, n.bytes[3] = d;
    return n;
}
IpAddress ip4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
    IpAddress ip;
    ip.family = 4;
    ip.bytes[0] = a, ip.bytes[1] = b, ip.bytes[2] = c, ip.bytes[3] = d;
    return ip;
}
constexpr int64_t kSec = 1000000;
constexpr int64_t kDay = 86400 * kSec;
} // namespace

TEST(Limits, CidrMatching) {
    EXPECT_TRUE(cidr_contains(v4(10, 1, 0, 0, 16), ip4(10, 1, 200, 3)));
    EXPECT_FALSE(cidr_contains(v4(10, 1, 0, 0, 16), ip4(10, 2, 0, 1)));
    EXPECT_TRUE(cidr_contains(v4(10, 1, 2, 3, 32), ip4(10, 1, 2, 3)));
    EXPECT_FALSE(cidr_contains(v4(10, 1, 2, 3, 32), ip4(10, 1, 2, 4)));
    EXPECT_TRUE(cidr_contains(v4(0, 0, 0, 0, 0), ip4(192, 168, 0, 1))) << "0.0.0.0/0 holds every IPv4 address";
    EXPECT_TRUE(cidr_contains(v4(192, 168, 0, 128, 25), ip4(192, 168, 0, 200)));
    EXPECT_FALSE(cidr_contains(v4(192, 168, 0, 128, 25), ip4(192, 168, 0, 100)));
    Cidr six;
    six.family = 6;
    six.bits = 128;
    six.bytes[15] = 1; // ::1
    IpAddress loop6;
    loop6.family = 6;
    loop6.bytes[15] = 1;
    EXPECT_TRUE(cidr_contains(six, loop6));
    EXPECT_FALSE(cidr_contains(six, ip4(127, 0, 0, 1))) << "families never mix";
    EXPECT_FALSE(ip_allowed({v4(0, 0, 0, 0, 0)}, IpAddress{})) << "no address: refused";
}

TEST(Limits, BucketAllowsABurstThenRefills) {
    BucketState b;
    int64_t retry = 0;
    int64_t t = 1000 * kSec;
    for (int i = 0; i < 5; ++i)
        ASSERT_TRUE(bucket_take(b, t, 5, 10 * kSec, &retry)) << i;
    EXPECT_FALSE(bucket_take(b, t, 5, 10 * kSec, &retry));
    EXPECT_EQ(retry, 2000) << "one token every 2 s";
    EXPECT_FALSE(bucket_take(b, t + 1999 * 1000, 5, 10 * kSec, &retry));
    EXPECT_EQ(retry, 1);
    EXPECT_TRUE(bucket_take(b, t + 2 * kSec, 5, 10 * kSec, &retry));
    EXPECT_FALSE(bucket_take(b, t + 2 * kSec, 5, 10 * kSec, &retry));
}

TEST(Limits, RefundAndFullness) {
    BucketState b;
    int64_t retry;
    ASSERT_TRUE(bucket_take(b, 0, 1, kSec, &retry));
    EXPECT_FALSE(bucket_full(b, 0, 1, kSec));
    bucket_refund(b, 1, kSec);
    EXPECT_TRUE(bucket_full(b, 0, 1, kSec));
    EXPECT_TRUE(bucket_take(b, 0, 1, kSec, &retry)) << "a refunded token can be taken again";
    EXPECT_TRUE(bucket_full(b, kSec, 1, kSec)) << "full again after a window";
}

TEST(Limits, ReadingABucketTakesNothing) {
    BucketState b;
    int64_t retry = 0;
    const int64_t t = 1000 * kSec;
    BucketReading fresh = bucket_read(b, t, 5, 10 * kSec);
    EXPECT_EQ(fresh.tokens, 5) << "a new bucket is full";
    EXPECT_EQ(fresh.full_in_us, 0);
    for (int i = 0; i < 3; ++i)
        ASSERT_TRUE(bucket_take(b, t, 5, 10 * kSec, &retry));
    BucketReading after = bucket_read(b, t, 5, 10 * kSec);
    EXPECT_EQ(after.tokens, 2);
    EXPECT_EQ(after.full_in_us, 6 * kSec) << "three tokens back at one every 2 s";
    EXPECT_EQ(bucket_read(b, t, 5, 10 * kSec).tokens, 2) << "reading twice takes nothing";
    EXPECT_EQ(bucket_read(b, t + 3 * kSec, 5, 10 * kSec).tokens, 3)
        << "one more 2 s later, a part of one does not count";
    EXPECT_EQ(bucket_read(b, t + 60 * kSec, 5, 10 * kSec).full_in_us, 0);
    EXPECT_EQ(bucket_read(b, t, 0, 10 * kSec).tokens, 0) << "no limit: nothing to read";
}

TEST(Limits, NoOverflowAtTheLargestLimits) {
    BucketState b;
    int64_t retry;
    for (int i = 0; i < 1000; ++i)
        ASSERT_TRUE(bucket_take(b, 0, 1000000, kDay, &retry));
    EXPECT_TRUE(bucket_take(b, 365 * kDay, 1000000, kDay, &retry)) << "a year idle: full, not overflowed";
}

TEST(Limits, AChangedLimitKeepsWhatWasSpent) {
    // 5 a minute, spent in a burst; the window moved to 59 s: still empty
    // (a fresh bucket per change gave a key 40 calls in 3.5 s).
    BucketState b;
    int64_t retry = 0, t = 1000 * kSec;
    for (int i = 0; i < 5; ++i)
        ASSERT_TRUE(bucket_take(b, t, 5, 60 * kSec, &retry));
    for (int change = 0; change < 8; ++change) {
        const int64_t window = (change % 2 ? 60 : 59) * kSec, old_window = (change % 2 ? 59 : 60) * kSec;
        bucket_change_limit(b, t, 5, old_window, 5, window);
        EXPECT_FALSE(bucket_take(b, t, 5, window, &retry)) << "change " << change;
    }
    // A higher limit: the 5 spent count against it, 5 more are there.
    bucket_change_limit(b, t, 5, 60 * kSec, 10, 60 * kSec);
    for (int i = 0; i < 5; ++i)
        EXPECT_TRUE(bucket_take(b, t, 10, 60 * kSec, &retry)) << i;
    EXPECT_FALSE(bucket_take(b, t, 10, 60 * kSec, &retry));
    // A lower one: never below empty, and refilling at the new rate.
    bucket_change_limit(b, t, 10, 60 * kSec, 2, 60 * kSec);
    EXPECT_FALSE(bucket_take(b, t, 2, 60 * kSec, &retry));
    EXPECT_EQ(retry, 30000) << "one token every 30 s";
    EXPECT_TRUE(bucket_take(b, t + 30 * kSec, 2, 60 * kSec, &retry));
    // A bucket never used stays full under its new limit.
    BucketState fresh;
    bucket_change_limit(fresh, t, 5, 60 * kSec, 3, kSec);
    for (int i = 0; i < 3; ++i)
        EXPECT_TRUE(bucket_take(fresh, t, 3, kSec, &retry));
    // The largest values do not overflow.
    BucketState big;
    ASSERT_TRUE(bucket_take(big, 0, 1000000, kDay, &retry));
    bucket_change_limit(big, 0, 1000000, kDay, 1000000, kSec);
    EXPECT_TRUE(bucket_take(big, 0, 1000000, kSec, &retry));
}

TEST(Limits, QuotaPeriods) {
    // 2026-11-28 23:59:59 UTC and 2026-11-29 00:00:01 UTC
    const int64_t day_2026_11_28 = 9828; // days since 2000-01-01
    const int64_t late = day_2026_11_28 * kDay + kDay - kSec;
    const int64_t early = (day_2026_11_28 + 1) * kDay + kSec;
    EXPECT_EQ(quota_period_start(Refill::day, late), day_2026_11_28 * kDay);
    EXPECT_EQ(quota_period_start(Refill::day, early), (day_2026_11_28 + 1) * kDay);
    // months: 2026-11-01 is day 9801, 2026-12-01 is day 9831
    EXPECT_EQ(quota_period_start(Refill::month, late), 9801 * kDay);
    EXPECT_EQ(quota_period_start(Refill::month, 9831 * kDay + 5), 9831 * kDay);
    EXPECT_EQ(quota_period_start(Refill::month, 9831 * kDay - 1), 9801 * kDay);
    EXPECT_EQ(quota_period_start(Refill::month, 0), 0) << "2000-01-01";
    EXPECT_EQ(quota_period_start(Refill::month, 60 * kDay), 60 * kDay) << "2000-03-01 (leap year)";
    EXPECT_EQ(quota_period_start(Refill::none, late), 0);
}

TEST(QuotaPeriod, ParseRefillKnowsOnlyDayAndMonth) {
    EXPECT_EQ(parse_refill("day"), Refill::day);
    EXPECT_EQ(parse_refill("month"), Refill::month);
    EXPECT_EQ(parse_refill("week"), std::nullopt);
    EXPECT_EQ(parse_refill(""), std::nullopt);
    EXPECT_EQ(parse_refill("Day"), std::nullopt);
}
