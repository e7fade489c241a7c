// last_used_at, reduced from the request-log stream: the newest successful
// use of each key since the last flush. The worker notes every inserted
// batch (O(1) per row, whatever the number of distinct keys) and writes the
// reduction to flint.api_keys once per flint.last_used_interval, so the
// table sees at most one UPDATE per key per interval. Postgres-free.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "log_record.hpp"

namespace flint {

class LastUsedTracker {
  public:
    // Successful rows with a key id move that key's newest use forward.
    void note(const LogRecord *rows, size_t count);
    // Pending (key, newest use) pairs, at most `limit`, in no particular order.
    void snapshot(std::vector<Uuid> *ids, std::vector<int64_t> *ats, size_t limit = SIZE_MAX) const;
    // After a flush: forget the written keys, except those whose use moved
    // on meanwhile; `keep` ids (locked elsewhere, still existing) stay pending.
    void forget_all_but(const std::vector<Uuid> &keep);
    // After writing part of them: forget `written`, except the `keep` ids.
    void forget(const std::vector<Uuid> &written, const std::vector<Uuid> &keep);
    size_t size() const { return newest_.size(); }

    // Keys locked elsewhere wait for the next round, out of this round's
    // parts (so that they never fill every part of it); restore() brings
    // them back, merged with any newer use noted meanwhile.
    void defer(const std::vector<Uuid> &ids);
    void restore();
    size_t deferred() const { return deferred_.size(); }

  private:
    std::unordered_map<Uuid, int64_t, UuidHash> newest_;
    std::unordered_map<Uuid, int64_t, UuidHash> deferred_;
};

} // namespace flint
