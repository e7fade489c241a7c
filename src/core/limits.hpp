// Traffic controls, the Postgres-free part: IP allowlist matching, the
// token-bucket arithmetic of rate limits, and quota periods (README
// "Traffic controls").
//
// Rate limit: a token bucket holding at most `limit` tokens that refills
// continuously at `limit` per `window` (burst = limit). Credit is kept in
// microseconds x limit, so the arithmetic is exact in integers: a full
// bucket is exactly `limit` tokens, and one token is window_us of credit.
#pragma once
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace flint {

struct IpAddress {
    uint8_t family = 0; // 4 or 6; 0: none
    uint8_t bytes[16] = {};
};

struct Cidr {
    uint8_t family = 0; // 4 or 6
    uint8_t bits = 0;   // prefix length
    uint8_t bytes[16] = {};
};

// Is the address inside the network? Families must match (an IPv4 address
// is not inside an IPv6 network, not even a v4-mapped one).
bool cidr_contains(const Cidr &net, const IpAddress &ip);
bool ip_allowed(const std::vector<Cidr> &allowlist, const IpAddress &ip);

struct BucketState {
    int64_t credit = -1; // -1: new (full)
    int64_t last_us = 0;
};

// Takes one token at `now_us` if there is one. When not, returns false and
// sets *retry_after_ms to when the next token will be there.
bool bucket_take(BucketState &b, int64_t now_us, int32_t limit, int64_t window_us, int64_t *retry_after_ms);
// Gives back a token taken by bucket_take (a later check refused the call).
void bucket_refund(BucketState &b, int32_t limit, int64_t window_us);
// A new limit or window for a bucket in use: what was spent stays spent.
// The tokens spent at now_us (under the old limit and window) are taken
// from a full bucket of the new one (never below empty), so changing a
// window or limit never hands out a fresh, full bucket.
void bucket_change_limit(BucketState &b, int64_t now_us, int32_t old_limit, int64_t old_window_us, int32_t new_limit,
                         int64_t new_window_us);
// True when the bucket is full again at now_us: forgetting it changes nothing.
bool bucket_full(const BucketState &b, int64_t now_us, int32_t limit, int64_t window_us);
// What a bucket holds at now_us, read without taking: whole tokens left, and
// the microseconds until it is full again (0: full).
struct BucketReading {
    int32_t tokens = 0;
    int64_t full_in_us = 0;
};
BucketReading bucket_read(BucketState b, int64_t now_us, int32_t limit, int64_t window_us);

enum class Refill : uint8_t { none, day, month };

// The start of the UTC day or month holding `at` (Postgres TimestampTz:
// microseconds since 2000-01-01 00:00 UTC); 0 for Refill::none.
// The one home of the quota period: the lease (C) and the period stored
// with a changed quota (SQL flint._quota_period_start) both call it.
int64_t quota_period_start(Refill refill, int64_t at);
// The refill_interval column's values, 'day' and 'month'; nullopt otherwise.
std::optional<Refill> parse_refill(std::string_view name);

} // namespace flint
