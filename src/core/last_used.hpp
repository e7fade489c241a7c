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
    // With now_us >= 0 (a timed round), keys this worker wrote within the
    // interval before now_us are left pending: one write per key per interval.
    void snapshot(std::vector<Uuid> *ids, std::vector<int64_t> *ats, size_t limit = SIZE_MAX,
                  int64_t now_us = -1) const;
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

    // A key's first use since this worker last wrote it (or ever, in this
    // run), more than flint.last_used_interval ago, is urgent: it is written
    // within the next pass, not at the end of the interval, so that a new
    // key never reads "never used" while it works. Still at most one write
    // per key per interval: a key written within it is never urgent.
    void set_interval(int64_t interval_us) { interval_us_ = interval_us; }
    // Pending urgent (key, newest use) pairs, at most `limit`; taken once.
    void take_urgent(std::vector<Uuid> *ids, std::vector<int64_t> *ats, size_t limit);
    // The worker wrote these keys at `now_us`; written_at() says when.
    void mark_written(const std::vector<Uuid> &ids, int64_t now_us);
    // Forgets writes older than the interval (they no longer matter).
    void prune_written(int64_t now_us);
    size_t urgent() const { return urgent_.size(); }

  private:
    bool written_within_interval(const Uuid &id, int64_t at) const;

    int64_t interval_us_ = 60 * 1000 * 1000;
    std::vector<Uuid> urgent_;
    std::unordered_map<Uuid, int64_t, UuidHash> written_;
    std::unordered_map<Uuid, int64_t, UuidHash> newest_;
    std::unordered_map<Uuid, int64_t, UuidHash> deferred_;
};

} // namespace flint
