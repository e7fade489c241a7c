// Usage rollups: a batch of request-log rows summed per (minute, merchant,
// key, outcome), so the log worker writes one flint.usage upsert per group
// and batch instead of one per row. Postgres-free.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "log_record.hpp"

namespace flint {

inline constexpr int64_t kMicrosPerMinute = 60'000'000;

// The start of the minute holding a Postgres timestamp (microseconds since
// 2000-01-01 UTC), rounding down before the epoch too.
int64_t minute_start(int64_t at);

struct UsageGroup {
    int64_t minute = 0;
    bool has_merchant = false; // rows of unknown or malformed keys have none
    Uuid merchant{};
    bool has_key = false;
    Uuid key{};
    std::string outcome;
    int64_t requests = 0;
    int64_t cost = 0;
};

class UsageRollup {
  public:
    void add(int64_t at, const Uuid *merchant, const Uuid *key, std::string_view outcome, int64_t cost);
    // Rows in encode_copy_binary's format (kCopyColumns, cost when with_cost,
    // any columns after it ignored), those with `at` before `before` only.
    // False, adding nothing, when the data is not that format.
    bool add_copy_binary(std::string_view data, bool with_cost, int64_t before = INT64_MAX);

    // The groups, in a stable order (minute, merchant, key, outcome).
    std::vector<UsageGroup> groups() const;
    size_t size() const { return groups_.size(); }
    void clear() { groups_.clear(); }

  private:
    // Keyed by the group's identity packed into bytes.
    std::unordered_map<std::string, UsageGroup> groups_;
};

} // namespace flint
