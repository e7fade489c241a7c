// A primary's spool holds request-log rows while the table insert is held up
// (a DBA's lock, a checkpoint storm, a slow disk). It is one shared budget,
// so no merchant may take more than its share of it: once the spool is past
// half its capacity, a merchant with more than flint.merchant_share percent
// of the capacity spooled has its verifications refused, and the others go
// on (README "Fair shares"). Postgres-free: the log worker counts, the
// backends read the published list.
#pragma once
#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "log_record.hpp"

namespace flint {

class SpoolShares {
  public:
    // Whose share a row spends: the key's merchant, once the key was found.
    // Rows of unknown or malformed keys have no merchant (a requested
    // merchant is the caller's claim, which would let anyone spend a
    // victim's share): they share the zero id.
    static Uuid owner(const LogRecord &row);

    void add(const LogRecord *rows, size_t n);    // spooled
    void remove(const LogRecord *rows, size_t n); // inserted, or set aside
    void clear();
    uint64_t rows_of(const Uuid &merchant) const;

    // The merchants past their share, largest first, at most max_out: none
    // while the spool holds no more than half of capacity_rows; otherwise
    // those with more than share_percent of capacity_rows spooled.
    std::vector<Uuid> over_share(uint64_t spooled_rows, uint64_t capacity_rows, int share_percent,
                                 size_t max_out) const;

  private:
    std::unordered_map<Uuid, uint64_t, UuidHash> rows_;
};

} // namespace flint
