// Process-wide state of the extension: GUCs and the shared-memory segment.
#pragma once
#include "pg_includes.hpp"

#include "log_queue.hpp"

namespace flint::pg {

inline constexpr int kOutcomeSlots = 16; // > the number of flint::Code values

struct SharedState {
    // Bumped after every commit that changed keys, merchants or scopes, so
    // backend-local key caches know to reload (see key_store.cpp).
    pg_atomic_uint64 keys_generation;
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
    LogQueue *queue;
};

// NULL unless the library was preloaded and shared memory is attached.
extern SharedState *shared_state;

// GUCs
extern bool guc_key_cache;
extern int guc_key_cache_size;
extern int guc_log_queue_size;
extern int guc_log_queue_wait_ms;
extern int guc_log_flush_interval_ms;
extern int guc_log_batch_size;
extern int guc_last_used_interval_ms;
extern int guc_rate_limit_slots;
extern int guc_quota_slots;
extern int guc_quota_lease;
extern char *guc_database;
extern char *guc_request_id;
extern char *guc_log_retention;

// Raises a clear error, with the fix, when the library was not preloaded.
void require_preload_unsafe();

// True in the request-log background worker.
extern bool in_log_worker;

} // namespace flint::pg
