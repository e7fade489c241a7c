// The primary's overflow writer: when the table insert falls behind (a
// checkpoint's full-page writes, a slow disk, a DBA's lock on the log), the
// queue is not left to fill and refuse verifications. A thread of the log
// worker takes rows from the queue while the worker's own transaction has
// been busy for kOverflowAfterMs and the queue is at least half full, and
// writes them to the durable spool (the standby's spool: checksummed batch
// files, renamed into place, bounded by flint.log_spool_size). The worker
// inserts spooled batches, each once, when it has caught up.
//
// The thread makes no Postgres call: plain POSIX file calls, the queue's
// atomics and C++ allocation only; every signal is blocked in it. Rows it
// took but could not write (an I/O error) stay in its hands and are written
// on the next try; its errors are reported by the worker.
#pragma once
#include "pg_includes.hpp"

#include "log_record.hpp"

#include <atomic>

namespace flint::pg {

inline constexpr int kOverflowAfterMs = 100;

// Serialises the queue's consumers (the worker and the overflow thread): the
// queue has one consumer at a time.
bool queue_pop(LogRecord &out);

// The worker marks its database work, so the thread knows when it is stuck.
void overflow_worker_busy(bool busy);
// The worker's last pass failed (it waits before trying again): meanwhile
// the thread keeps the queue from filling.
void overflow_worker_failing(bool failing);

// Starts the thread (a primary's worker, once); it stops at the worker's exit.
// `origin` and `next_batch_id` name the batches it writes (shared with the
// worker's own spooling).
void overflow_start(const Uuid &origin, std::atomic<uint64_t> *next_batch_id, const std::string &server);
// Stops and joins the thread (idempotent); rows it still holds are written first.
void overflow_stop();

// The thread's last I/O error since the previous call ("" when none), for
// the worker to report as a WARNING.
std::string overflow_take_error();

// Spools `rows` as one batch with the next id of `batch_ids` (a worker or
// the thread): accounting, and the forwarder's latch. Throws FlintError on
// an I/O error (nothing spooled).
void spool_rows(const Uuid &origin, std::atomic<uint64_t> *batch_ids, const std::string &server, const LogRecord *rows,
                size_t n);

// The rows of a spooled batch left the spool (inserted, or set aside): the
// merchants' shares of it come back.
void spool_shares_removed(const LogRecord *rows, size_t n);

// The worker: spool_recount() while neither it nor the thread writes a batch.
void spool_recount_in_worker();

// The worker (a primary): the time of the oldest row in the spool, INT64_MAX
// when it is empty, INT64_MIN when some batch's is not known (spooled before
// this run started, or while a standby).
int64_t oldest_spooled_at();

// For a backend about to queue `row`: is its merchant past its share of a
// primary's spool (more than flint.merchant_share percent of
// flint.log_spool_size, while the spool is past half full)? Then the
// verification is refused, and other merchants' go on.
bool spool_share_spent(const LogRecord &row);

} // namespace flint::pg
