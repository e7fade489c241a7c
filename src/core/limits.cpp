#include "limits.hpp"

#include <algorithm>

namespace flint {

bool cidr_contains(const Cidr &net, const IpAddress &ip) {
    if (net.family != ip.family)
        return false;
    int bits = net.bits;
    for (int i = 0; bits > 0; ++i, bits -= 8) {
        uint8_t mask = bits >= 8 ? 0xFF : static_cast<uint8_t>(0xFF << (8 - bits));
        if ((net.bytes[i] & mask) != (ip.bytes[i] & mask))
            return false;
    }
    return true;
}

bool ip_allowed(const std::vector<Cidr> &allowlist, const IpAddress &ip) {
    return ip.family != 0 &&
           std::any_of(allowlist.begin(), allowlist.end(), [&](const Cidr &n) { return cidr_contains(n, ip); });
}

namespace {
int64_t capacity(int32_t limit, int64_t window_us) { return window_us * limit; }

void refill(BucketState &b, int64_t now_us, int32_t limit, int64_t window_us) {
    if (b.credit < 0) {
        b.credit = capacity(limit, window_us);
    } else if (now_us > b.last_us) {
        // capped first: a long idle gap must not overflow
        int64_t elapsed = std::min(now_us - b.last_us, window_us);
        b.credit = std::min(capacity(limit, window_us), b.credit + elapsed * limit);
    }
    b.last_us = std::max(b.last_us, now_us);
}
} // namespace

bool bucket_take(BucketState &b, int64_t now_us, int32_t limit, int64_t window_us, int64_t *retry_after_ms) {
    refill(b, now_us, limit, window_us);
    if (b.credit >= window_us) {
        b.credit -= window_us;
        return true;
    }
    int64_t missing_us = (window_us - b.credit + limit - 1) / limit; // real time until one token
    *retry_after_ms = std::max<int64_t>(1, (missing_us + 999) / 1000);
    return false;
}

void bucket_refund(BucketState &b, int32_t limit, int64_t window_us) {
    b.credit = std::min(capacity(limit, window_us), b.credit + window_us);
}

void bucket_change_limit(BucketState &b, int64_t now_us, int32_t old_limit, int64_t old_window_us, int32_t new_limit,
                         int64_t new_window_us) {
    if (b.credit < 0 || old_limit <= 0 || old_window_us <= 0)
        return; // new: full under any limit
    refill(b, now_us, old_limit, old_window_us);
    // One token is window_us of credit: rescale the spent credit to the new window.
    const __int128 spent =
        static_cast<__int128>(capacity(old_limit, old_window_us) - b.credit) * new_window_us / old_window_us;
    const __int128 left = static_cast<__int128>(capacity(new_limit, new_window_us)) - spent;
    b.credit = left > 0 ? static_cast<int64_t>(left) : 0;
}

bool bucket_full(const BucketState &b, int64_t now_us, int32_t limit, int64_t window_us) {
    if (b.credit < 0)
        return true;
    int64_t elapsed = std::min(std::max<int64_t>(0, now_us - b.last_us), window_us);
    return b.credit + elapsed * limit >= capacity(limit, window_us);
}

BucketReading bucket_read(BucketState b, int64_t now_us, int32_t limit, int64_t window_us) {
    BucketReading r;
    if (limit <= 0 || window_us <= 0)
        return r;
    refill(b, now_us, limit, window_us);
    r.tokens = static_cast<int32_t>(b.credit / window_us);
    r.full_in_us = (capacity(limit, window_us) - b.credit + limit - 1) / limit;
    return r;
}

namespace {
constexpr int64_t kUsecPerDay = 86400LL * 1000000;
// Days since 2000-01-01 to the civil date (Howard Hinnant's algorithm).
void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d) {
    z += 10957 + 719468; // 2000-01-01 is day 10957 after 1970-01-01
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = static_cast<unsigned>(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = static_cast<int64_t>(yoe) + era * 400 + (*m <= 2);
}
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<int64_t>(doe) - 719468 - 10957;
}
} // namespace

int64_t quota_period_start(Refill refill, int64_t at) {
    if (refill == Refill::none)
        return 0;
    int64_t day = at >= 0 ? at / kUsecPerDay : -((-at + kUsecPerDay - 1) / kUsecPerDay);
    if (refill == Refill::day)
        return day * kUsecPerDay;
    int64_t y;
    unsigned m, d;
    civil_from_days(day, &y, &m, &d);
    return days_from_civil(y, m, 1) * kUsecPerDay;
}

std::optional<Refill> parse_refill(std::string_view name) {
    if (name == "day")
        return Refill::day;
    if (name == "month")
        return Refill::month;
    return std::nullopt;
}

} // namespace flint
