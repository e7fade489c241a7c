// Process-wide state of the extension: GUCs and the shared-memory segment.
#pragma once
#include "pg_includes.hpp"

#include "log_queue.hpp"

extern "C" {
#include "storage/spin.h"
}

namespace flint::pg {

inline constexpr int kOutcomeSlots = 16; // > the number of flint::Code values
static_assert(static_cast<int>(kLastCode) < kOutcomeSlots, "every outcome has a counter");

// A standby's log forwarding (spool.cpp, forwarder.cpp): the log worker
// writes the queue's rows to the spool, the forwarder sends them on.
struct ForwardState {
    pg_atomic_uint64 spooled_seq;   // newest batch written to the spool (its file sequence)
    pg_atomic_uint64 forwarded_seq; // newest batch the primary has (or already had)
    pg_atomic_uint64 spool_bytes;   // in the spool now
    pg_atomic_uint64 spool_rows;
    pg_atomic_uint64 forwarded_rows; // since the server started
    pg_atomic_uint32 spool_ready;    // the worker has sized the spool: the forwarder may begin
    pg_atomic_uint32 spool_full;     // the worker stopped taking rows: flint.log_spool_size reached
    pg_atomic_uint32 recount;        // a batch was set aside: the worker counts the spool's files again
    Latch *volatile forwarder_latch;
    volatile pid_t forwarder_pid;
    slock_t lock;         // guards connection
    char connection[256]; // the state of the connection to the primary, for flint_log_status()
};

// A primary's merchants past their share of the spool (core
// spool_shares.hpp): written by the log worker's process, read by backends
// before they queue a row. A seqlock: seq is odd while it is written.
inline constexpr uint32_t kMaxOverShare = 128;
struct SpoolShareList {
    pg_atomic_uint32 seq;
    pg_atomic_uint32 count;
    uint8_t merchants[kMaxOverShare][16];
};

// The keys a commit changed, when it changed only some (a role's holders):
// a backend whose cache is at an older generation forgets just those ids,
// unless a commit since then changed keys wholesale (full_generation) or
// the ring has dropped entries it would need (dropped_generation).
inline constexpr int kKeyInvalidations = 4096;
struct KeyInvalidations {
    slock_t lock;
    uint64 full_generation;
    uint64 dropped_generation;
    uint64 written; // entries written so far; the ring holds the last kKeyInvalidations
    struct {
        uint64 generation;
        uint8_t id[16];
    } ring[kKeyInvalidations];
};

struct SharedState {
    // Bumped after every commit that changed keys, merchants or scopes, so
    // backend-local key caches know to reload (see key_store.cpp).
    pg_atomic_uint64 keys_generation;
    KeyInvalidations key_invalidations;
    // The log worker's latch, set by backends that want it to drain now.
    Latch *volatile worker_latch;
    volatile pid_t worker_pid;
    // flint_flush_log() asks for last_used_at to be written now (requested)
    // and waits until the worker has done so (written).
    pg_atomic_uint64 last_used_requested;
    pg_atomic_uint64 last_used_written;
    // Cumulative since start, for flint.metrics: log rows by outcome code,
    // and key-cache hits and misses of every backend.
    pg_atomic_uint64 outcome_counts[kOutcomeSlots];
    pg_atomic_uint64 cache_hits;
    pg_atomic_uint64 cache_misses;
    pg_atomic_uint64 key_cache_bytes; // every backend's key-cache blocks (flint.key_cache_total)
    // The newest `at` (a TimestampTz) of rows inserted into flint.request_log
    // at or after the usage mark by anyone but the worker's own batches
    // (forwarded and spooled rows): the worker's tally does not hold them.
    pg_atomic_uint64 untallied_until;
    ForwardState forward;
    SpoolShareList spool_shares;
    LogQueue *queue;
};

// NULL unless the library was preloaded and shared memory is attached.
extern SharedState *shared_state;

// GUCs
extern bool guc_key_cache;
extern int guc_key_cache_size;
extern int guc_key_cache_total_mb;
extern int guc_log_queue_size;
extern int guc_log_queue_wait_ms;
extern int guc_log_flush_interval_ms;
extern int guc_log_batch_size;
extern bool guc_log_direct_insert;
extern int guc_last_used_interval_ms;
extern int guc_rate_limit_slots;
extern int guc_quota_slots;
extern int guc_quota_lease;
extern char *guc_database;
extern char *guc_request_id;
extern char *guc_log_retention;
extern char *guc_usage_retention;
extern char *guc_primary_conninfo;
extern int guc_log_spool_size_mb;
extern int guc_merchant_share;
extern bool guc_log_refusals;
extern int guc_refusal_summary_interval_ms;

// The name this server logs under: cluster_name, or the system identifier.
const std::string &server_name();

// Raises a clear error, with the fix, when the library was not preloaded.
void require_preload_unsafe();

// A refused verification is about to raise: its server-log line is left out
// unless flint.log_refusals (the worker writes a summary a minute).
void note_refusal_raised();

// Masks a token in the session's application_name setting itself (and
// pg_stat_activity's copy): called at every log message and verification.
void scrub_application_name();

// True in the request-log background worker.
extern bool in_log_worker;
// Inside flint._receive_last_used's UPDATE: bookkeeping, not a key change.
extern bool in_bookkeeping;

} // namespace flint::pg
