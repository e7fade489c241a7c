#include "spool_shares.hpp"

#include <algorithm>

namespace flint {

Uuid SpoolShares::owner(const LogRecord &row) { return row.has_merchant_id ? row.merchant_id : Uuid{}; }

void SpoolShares::add(const LogRecord *rows, size_t n) {
    for (size_t i = 0; i < n; ++i)
        ++rows_[owner(rows[i])];
}

void SpoolShares::remove(const LogRecord *rows, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        auto it = rows_.find(owner(rows[i]));
        if (it == rows_.end())
            continue; // spooled before this count began (a restart): never counted
        if (--it->second == 0)
            rows_.erase(it);
    }
}

void SpoolShares::clear() { rows_.clear(); }

uint64_t SpoolShares::rows_of(const Uuid &merchant) const {
    auto it = rows_.find(merchant);
    return it == rows_.end() ? 0 : it->second;
}

std::vector<Uuid> SpoolShares::over_share(uint64_t spooled_rows, uint64_t capacity_rows, int share_percent,
                                          size_t max_out) const {
    std::vector<std::pair<uint64_t, Uuid>> over;
    if (spooled_rows * 2 <= capacity_rows)
        return {};
    // capacity_rows is an estimate (the spool counts bytes, and a batch
    // file's rows may pack tighter): a spool holding more rows than that
    // estimate is the measure instead, so that a 100% share is never spent.
    const uint64_t capacity = std::max(capacity_rows, spooled_rows);
    const uint64_t share = capacity * static_cast<uint64_t>(std::clamp(share_percent, 1, 100)) / 100;
    for (const auto &[merchant, rows] : rows_)
        if (rows > share)
            over.emplace_back(rows, merchant);
    std::sort(over.begin(), over.end(), [](const auto &a, const auto &b) { return a.first > b.first; });
    std::vector<Uuid> out;
    for (size_t i = 0; i < over.size() && i < max_out; ++i)
        out.push_back(over[i].second);
    return out;
}

} // namespace flint
