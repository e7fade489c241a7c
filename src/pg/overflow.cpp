#include "overflow.hpp"

#include "error_boundary.hpp"
#include "spool.hpp"
#include "spool_shares.hpp"
#include "state.hpp"

extern "C" {
#include "access/xlog.h"
}

#include <atomic>
#include <chrono>
#include <map>
#include <csignal>
#include <mutex>
#include <pthread.h>
#include <thread>

namespace flint::pg {

namespace {

std::mutex pop_mutex;
std::atomic<int64_t> busy_since_us{0}; // 0: the worker is not in a transaction
std::atomic<bool> stop_requested{false};
std::atomic<bool> worker_failing{false};
std::thread *writer = nullptr; // never destroyed unjoined: see overflow_stop

// One spool writer at a time (the worker, a standby's or after a failed
// insert, and the thread), and the count of each merchant's spooled rows
// (a primary's, from overflow_start on) with the list of merchants past
// their share that backends read (SharedState::spool_shares).
std::mutex spool_mutex;
SpoolShares spool_shares;
bool counting_shares = false;
// A primary's spooled batches by sequence, with the time of each one's
// oldest row: the usage roll-up stays behind rows not yet in the table, so
// they are summed with their minute instead of one upsert each as late rows.
std::map<uint64_t, int64_t> spooled_oldest_at;

void publish_over_share_locked() {
    std::vector<Uuid> over;
    if (counting_shares) {
        const uint64_t capacity = static_cast<uint64_t>(guc_log_spool_size_mb) * 1024 * 1024 / sizeof(LogRecord);
        over = spool_shares.over_share(pg_atomic_read_u64(&shared_state->forward.spool_rows), capacity,
                                       guc_merchant_share, kMaxOverShare);
    }
    SpoolShareList &list = shared_state->spool_shares;
    if (over.empty() && pg_atomic_read_u32(&list.count) == 0)
        return;
    pg_atomic_fetch_add_u32(&list.seq, 1); // odd: readers try again
    for (size_t i = 0; i < over.size(); ++i)
        std::memcpy(list.merchants[i], over[i].data(), 16);
    pg_atomic_write_u32(&list.count, static_cast<uint32>(over.size()));
    pg_write_barrier();
    pg_atomic_fetch_add_u32(&list.seq, 1);
}

std::mutex error_mutex;
std::string last_error;
std::atomic<uint64_t> lost_at_stop{0}; // rows the thread could not write when stopping

int64_t now_us() {
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// Postgres's epoch (2000-01-01) in microseconds: the spool's sequence clock.
uint64_t pg_clock_us() {
    int64_t unix_us =
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    return static_cast<uint64_t>(unix_us - INT64CONST(946684800000000));
}

bool worker_stuck() {
    if (worker_failing.load(std::memory_order_relaxed))
        return true;
    int64_t since = busy_since_us.load(std::memory_order_relaxed);
    return since != 0 && now_us() - since >= kOverflowAfterMs * 1000;
}

void writer_loop(Uuid origin, std::atomic<uint64_t> *next_batch_id, std::string server) {
    LogQueue *queue = shared_state->queue;
    std::vector<LogRecord> held; // taken from the queue, not yet in the spool
    const size_t batch = static_cast<size_t>(guc_log_batch_size);
    while (!stop_requested.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        if (held.empty()) {
            if (!worker_stuck() || queue->depth() < queue->capacity() / 2)
                continue;
            size_t take = std::min(batch, spool_room_rows());
            try {
                held.reserve(take); // before popping: a pop is never lost to a failed allocation
            } catch (...) {
                continue;
            }
            LogRecord r;
            std::lock_guard<std::mutex> guard(pop_mutex);
            while (held.size() < take && queue->try_pop(r))
                held.push_back(r);
        }
        if (held.empty())
            continue;
        try {
            spool_rows(origin, next_batch_id, server, held.data(), held.size());
            // Out of the queue and durable: counted as stored for the queue's
            // accounting; flint_flush_log also waits until the spool is inserted.
            queue->completed.fetch_add(held.size());
            held.clear();
        } catch (const std::exception &e) {
            {
                std::lock_guard<std::mutex> guard(error_mutex);
                last_error = e.what();
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        } catch (...) {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    }
    // Stopping: what is held goes to the spool. If even that fails the rows
    // are lost (as the queue is at a crash), but counted as done, so that
    // flint_flush_log does not wait for them forever.
    if (!held.empty()) {
        try {
            spool_rows(origin, next_batch_id, server, held.data(), held.size());
        } catch (...) {
            lost_at_stop.fetch_add(held.size());
        }
        queue->completed.fetch_add(held.size());
    }
}

void stop_at_exit(int, Datum) { overflow_stop(); }

} // namespace

bool queue_pop(LogRecord &out) {
    std::lock_guard<std::mutex> guard(pop_mutex);
    return shared_state->queue->try_pop(out);
}

void overflow_worker_busy(bool busy) { busy_since_us.store(busy ? now_us() : 0, std::memory_order_relaxed); }

void overflow_worker_failing(bool failing) { worker_failing.store(failing, std::memory_order_relaxed); }

void overflow_start(const Uuid &origin, std::atomic<uint64_t> *next_batch_id, const std::string &server) {
    if (writer || RecoveryInProgress())
        return;
    stop_requested = false;
    {
        // A primary's spool is shared by its merchants: count their rows
        // from now on (rows spooled before a restart are not attributed).
        std::lock_guard<std::mutex> guard(spool_mutex);
        counting_shares = true;
    }
    // The thread must never run a Postgres signal handler: block every
    // signal while it is created (it inherits the mask), then restore ours.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    writer = new std::thread(writer_loop, origin, next_batch_id, server);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    pg_guard([] { before_shmem_exit(stop_at_exit, 0); });
}

void overflow_stop() {
    if (!writer)
        return;
    stop_requested = true;
    writer->join();
    delete writer;
    writer = nullptr;
}

std::string overflow_take_error() {
    std::lock_guard<std::mutex> guard(error_mutex);
    std::string e;
    e.swap(last_error);
    if (uint64_t lost = lost_at_stop.exchange(0))
        e += (e.empty() ? "" : "; ") + std::string("flint_keys: the overflow writer could not spool ") +
             std::to_string(lost) + " log rows when stopping; they are lost";
    return e;
}

void spool_rows(const Uuid &origin, std::atomic<uint64_t> *batch_ids, const std::string &server, const LogRecord *rows,
                size_t n) {
    ForwardState &f = shared_state->forward;
    // The batch id and the file's sequence are taken together, so that
    // batches are inserted in id order (a primary remembers the highest id of
    // each origin it has inserted).
    std::lock_guard<std::mutex> guard(spool_mutex);
    const uint64_t batch_id = batch_ids->fetch_add(1) + 1;
    const std::string bytes = encode_spool_batch(origin, batch_id, server, rows, n);
    uint64_t seq = next_spool_sequence(pg_atomic_read_u64(&f.spooled_seq), pg_clock_us());
    // Counted before the file appears: the worker may insert and remove it
    // the moment it is renamed into place.
    pg_atomic_fetch_add_u64(&f.spool_bytes, bytes.size());
    pg_atomic_fetch_add_u64(&f.spool_rows, n);
    try {
        spool_write(seq, bytes);
    } catch (...) {
        pg_atomic_fetch_sub_u64(&f.spool_bytes, bytes.size());
        pg_atomic_fetch_sub_u64(&f.spool_rows, n);
        throw;
    }
    pg_atomic_write_u64(&f.spooled_seq, seq);
    if (counting_shares) {
        int64_t oldest = INT64_MAX;
        for (size_t i = 0; i < n; ++i)
            oldest = std::min(oldest, rows[i].at);
        spooled_oldest_at[seq] = oldest;
        spool_shares.add(rows, n);
        publish_over_share_locked();
    }
    if (Latch *latch = f.forwarder_latch)
        SetLatch(latch);
}

void spool_recount_in_worker() {
    std::lock_guard<std::mutex> guard(spool_mutex); // no batch is being written meanwhile
    spool_recount();
}

int64_t oldest_spooled_at() {
    if (pg_atomic_read_u64(&shared_state->forward.spool_rows) == 0)
        return INT64_MAX;
    const std::vector<uint64_t> present = spool_sequences();
    std::lock_guard<std::mutex> guard(spool_mutex);
    std::map<uint64_t, int64_t> kept;
    int64_t oldest = INT64_MAX;
    for (uint64_t seq : present) {
        auto it = spooled_oldest_at.find(seq);
        if (it == spooled_oldest_at.end())
            return INT64_MIN; // spooled before this run (or as a standby): not known
        oldest = std::min(oldest, it->second);
        kept.insert(*it);
    }
    spooled_oldest_at.swap(kept); // inserted batches leave the map
    return oldest;
}

void spool_shares_removed(const LogRecord *rows, size_t n) {
    std::lock_guard<std::mutex> guard(spool_mutex);
    spool_shares.remove(rows, n);
    publish_over_share_locked();
}

bool spool_share_spent(const LogRecord &row) {
    SpoolShareList &list = shared_state->spool_shares;
    if (pg_atomic_read_u32(&list.count) == 0)
        return false; // the usual case: one atomic read
    const Uuid owner = SpoolShares::owner(row);
    for (int tries = 0; tries < 100; ++tries) {
        uint32 seq = pg_atomic_read_u32(&list.seq);
        if (seq & 1)
            continue; // being written
        pg_read_barrier();
        const uint32 n = std::min(pg_atomic_read_u32(&list.count), kMaxOverShare);
        bool found = false;
        for (uint32 i = 0; i < n && !found; ++i)
            found = std::memcmp(list.merchants[i], owner.data(), 16) == 0;
        pg_read_barrier();
        if (pg_atomic_read_u32(&list.seq) == seq)
            return found;
    }
    return false; // the worker kept rewriting it: let this row through
}

} // namespace flint::pg
