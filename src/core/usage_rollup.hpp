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

// `t` rounded down to a multiple of `step` (> 0), before zero too.
int64_t floor_to(int64_t t, int64_t step);

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
    // `requests` rows of one group (1: a single row).
    void add(int64_t at, const Uuid *merchant, const Uuid *key, std::string_view outcome, int64_t cost,
             int64_t requests = 1);
    // Rows in encode_copy_binary's format (kCopyColumns, cost when with_cost,
    // any columns after it ignored), those with `at` before `before` only.
    // False, adding nothing, when the data is not that format. *latest_rest
    // (when given, and the data is valid): the newest `at` of the rows not
    // added, INT64_MIN when there are none.
    bool add_copy_binary(std::string_view data, bool with_cost, int64_t before = INT64_MAX,
                         int64_t *latest_rest = nullptr);

    // The groups, in a stable order (minute, merchant, key, outcome).
    std::vector<UsageGroup> groups() const;
    size_t size() const { return groups_.size(); }
    void clear() { groups_.clear(); }

  private:
    // Keyed by the group's identity packed into bytes.
    std::unordered_map<std::string, UsageGroup> groups_;
};

// The log worker's running sums of the rows it inserted, per 2-second slot,
// merchant, key and outcome, so that a roll-up step writes its groups
// without reading the rows back from the table.
class UsageTally {
  public:
    static constexpr int64_t kSlotMicros = 2'000'000;
    static int64_t slot_start(int64_t at);

    void add(const LogRecord &row);
    // The rows of the slots from `from` to `upto` (both slot starts), as
    // minute groups; forgets every slot wholly before `upto` (those before
    // `from` were counted another way).
    UsageRollup take(int64_t from, int64_t upto);
    void forget_before(int64_t upto) { (void)take(INT64_MAX, upto); }
    size_t size() const { return sums_.size(); }
    void clear() { sums_.clear(); }

  private:
    struct Group {
        int64_t slot;
        Uuid merchant, key;
        bool has_merchant, has_key;
        Code outcome;
        bool operator==(const Group &o) const {
            return slot == o.slot && merchant == o.merchant && key == o.key && has_merchant == o.has_merchant &&
                   has_key == o.has_key && outcome == o.outcome;
        }
    };
    struct GroupHash {
        size_t operator()(const Group &g) const;
    };
    struct Sums {
        int64_t requests = 0, cost = 0;
    };
    std::unordered_map<Group, Sums, GroupHash> sums_;
};

} // namespace flint
