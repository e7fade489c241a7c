#include "request_log.hpp"

#include "auth_context.hpp"
#include "datums.hpp"
#include "error_boundary.hpp"
#include "scrub.hpp"
#include "overflow.hpp"
#include "spool.hpp"
#include "traffic.hpp"
#include "state.hpp"

extern "C" {
#include "access/xlog.h"
#include "commands/dbcommands.h"
}

namespace flint::pg {

namespace {

bool database_checked = false; // this backend's database is flint.database

void check_database_unsafe() {
    require_preload_unsafe();
    Oid log_database = get_database_oid(guc_database, true);
    if (log_database != MyDatabaseId)
        ereport(ERROR,
                (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                 errmsg("flint_keys logs verifications to database \"%s\", not this one", guc_database),
                 errhint("Set flint.database in postgresql.conf to the database that uses flint_keys, and restart.")));
}

// The state of a standby's connection to the primary ("" on a primary).
std::string primary_connection() {
    ForwardState &f = shared_state->forward;
    char state[sizeof f.connection];
    SpinLockAcquire(&f.lock);
    std::memcpy(state, f.connection, sizeof state);
    SpinLockRelease(&f.lock);
    state[sizeof state - 1] = '\0';
    return state;
}

// Wakes the worker (and, for flint_flush_log on a standby, the forwarder),
// then sleeps up to `ms` on our own latch (interruptible).
void nudge_worker_and_wait(long ms, bool forwarder_too = false) {
    wake_log_worker();
    if (Latch *latch = shared_state->forward.forwarder_latch; latch && forwarder_too)
        SetLatch(latch);
    pg_guard([ms] {
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, ms, PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        CHECK_FOR_INTERRUPTS();
    });
}

} // namespace

void wake_log_worker() {
    if (Latch *latch = shared_state->worker_latch)
        SetLatch(latch);
}

void emit_log_record(LogRecord &record) {
    if (!database_checked) { // flint.database cannot change without a restart
        pg_guard([] { check_database_unsafe(); });
        database_checked = true;
    }
    record.backend_pid = MyProcPid;
    if (!record.client_given) {
        const IpAddress ip = connection_address();
        record.client_family = ip.family;
        std::memcpy(record.client_ip, ip.bytes, sizeof ip.bytes);
    }
    if (application_name) { // client-supplied: a token placed there keeps only its display prefix
        scrub_application_name();
        copy_field(record.application_name, application_name, std::strlen(application_name));
        scrub_tokens(record.application_name);
    }
    // A request id that holds a key (as the scrubber finds one) is dropped, never stored.
    if (guc_request_id && !contains_token(guc_request_id))
        copy_field(record.request_id, guc_request_id, std::strlen(guc_request_id));

    LogQueue *queue = shared_state->queue;
    if (spool_share_spent(record)) {
        queue->refused.fetch_add(1);
        throw FlintError("53000",
                         "log_queue_full: this merchant's share of the request-log spool is spent; the verification "
                         "was refused",
                         "The log worker cannot insert into flint.request_log and keeps rows in its spool; this "
                         "merchant has more than flint.merchant_share (" +
                             std::to_string(guc_merchant_share) + "%) of flint.log_spool_size spooled.",
                         "Other merchants' verifications go on. Look for what holds up the inserts (a lock on "
                         "flint.request_log, a full disk: the worker's WARNINGs say).",
                         true);
    }
    pg_atomic_fetch_add_u64(&shared_state->outcome_counts[static_cast<int>(record.outcome) % kOutcomeSlots], 1);
    if (queue->try_push(record)) {
        if (queue->depth() > queue->capacity() / 4)
            wake_log_worker();
        return;
    }
    // Full: wait a bounded time for the worker to make room, then fail closed.
    TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), guc_log_queue_wait_ms);
    bool pushed = false;
    while (!pushed && GetCurrentTimestamp() < deadline) {
        nudge_worker_and_wait(1);
        pushed = queue->try_push(record);
    }
    if (!pushed) {
        queue->refused.fetch_add(1);
        if (pg_atomic_read_u32(&shared_state->forward.spool_full))
            throw FlintError("53000", "log_queue_full: the request log queue is full; the verification was refused",
                             "This standby's log spool holds flint.log_spool_size (" +
                                 std::to_string(guc_log_spool_size_mb) +
                                 " MB) of rows not yet forwarded to the primary.",
                             "The primary is unreachable or refusing the standby's rows: bring it back, or raise "
                             "flint.log_spool_size (flint_log_status() shows the spool and the connection).",
                             true);
        if (spool_room_rows() < static_cast<size_t>(guc_log_batch_size)) // the spool cannot take a batch
            throw FlintError("53000", "log_queue_full: the request log queue is full; the verification was refused",
                             "The log worker cannot insert into flint.request_log, and its spool holds "
                             "flint.log_spool_size (" +
                                 std::to_string(guc_log_spool_size_mb) + " MB) of rows waiting for the table.",
                             "Look for what holds up the inserts (a lock on flint.request_log, a full disk: the "
                             "worker's WARNINGs say), or raise flint.log_spool_size.",
                             true);
        throw FlintError("53000", "log_queue_full: the request log queue is full; the verification was refused",
                         "The log worker has not drained the queue for " + std::to_string(guc_log_queue_wait_ms) +
                             " ms; check that it is running (pg_stat_activity, backend_type 'flint_keys log worker').",
                         "Raise flint.log_queue_size or flint.log_queue_wait, or look for a stalled log worker.", true);
    }
}

LogRecord context_log_record(LogSource source, Code outcome) {
    LogRecord rec;
    rec.cost = 0; // checks on a context spend no quota
    rec.at = GetCurrentTimestamp();
    rec.source = source;
    rec.outcome = outcome;
    if (const AuthContext *ctx = current_auth()) {
        rec.has_key_id = rec.has_merchant_id = true;
        rec.key_id = ctx->key_id;
        rec.merchant_id = ctx->merchant_id;
        copy_field(rec.display_prefix, ctx->display_prefix.data(), ctx->display_prefix.size());
    }
    return rec;
}

void flush_log() {
    pg_guard([] { require_preload_unsafe(); });
    LogQueue *queue = shared_state->queue;
    ForwardState &f = shared_state->forward;
    const bool standby = RecoveryInProgress();
    uint64_t target = queue->pushed();
    uint64_t last_used_target = pg_atomic_add_fetch_u64(&shared_state->last_used_requested, 1);
    uint64_t forward_target = 0; // a standby: the last batch holding our rows, once spooled
    bool forward_target_set = false;
    // Bounded: a worker that is down (restarting, or its database missing),
    // or a primary that is away, must not hang the caller forever. A backlog
    // the worker is working through (a spool of many seconds of rows after
    // a checkpoint storm) is waited for while it shrinks, up to kFlushMaxMs.
    constexpr long kStallMs = 30 * 1000, kFlushMaxMs = 10 * 60 * 1000;
    const TimestampTz give_up = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), kFlushMaxMs);
    TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), kStallMs);
    uint64_t progress = 0;
    for (;;) {
        // Rows taken from the queue, spooled rows gone, batches forwarded.
        const uint64_t now_progress =
            queue->completed.load() - pg_atomic_read_u64(&f.spool_rows) + pg_atomic_read_u64(&f.forwarded_seq);
        if (now_progress != progress) {
            progress = now_progress;
            deadline = std::min(give_up, TimestampTzPlusMilliseconds(GetCurrentTimestamp(), kStallMs));
        }
        // A primary's rows are stored once inserted: those the overflow
        // writer spooled count as taken from the queue, so also wait for the
        // spool to be empty.
        bool stored = queue->completed.load() >= target && (standby || pg_atomic_read_u64(&f.spool_rows) == 0);
        if (stored && standby && !forward_target_set) {
            forward_target = pg_atomic_read_u64(&f.spooled_seq); // 0: nothing spooled since the start
            forward_target_set = true;
        }
        bool forwarded = !standby || (stored && pg_atomic_read_u64(&f.forwarded_seq) >= forward_target);
        if (stored && forwarded && pg_atomic_read_u64(&shared_state->last_used_written) >= last_used_target)
            return;
        if (GetCurrentTimestamp() >= deadline) {
            if (standby && stored)
                throw FlintError("57014", "flint_flush_log: the primary has not received this standby's rows for 30 s",
                                 std::to_string(pg_atomic_read_u64(&f.spool_rows)) + " rows are spooled.",
                                 "They are kept in the spool and forwarded when the primary is back; "
                                 "flint_log_status() shows the connection to the primary.");
            throw FlintError(
                "57014", "flint_flush_log: the log worker has not inserted the queued rows for 30 s",
                std::to_string(target - std::min(target, queue->completed.load())) + " rows are still queued, " +
                    std::to_string(pg_atomic_read_u64(&f.spool_rows)) + " spooled.",
                "Check that the flint_keys log worker is running and that flint.database names this database.");
        }
        nudge_worker_and_wait(5, standby);
    }
}

// flint_log_status(), flint._counters() and flint_flush_log(): the queue and
// its counters, for support and monitoring.
namespace {

// flint._log_status_here(): this server's queue, spool and forwarding
// counters, for support and monitoring (flint_log_status() adds the
// standbys that forwarded rows here).
Datum log_status_body(FunctionCallInfo fcinfo) {
    pg_guard([] { require_preload_unsafe(); });
    LogQueue *queue = shared_state->queue;
    ForwardState &f = shared_state->forward;
    const bool standby = RecoveryInProgress();
    const std::string connection = primary_connection();
    Datum values[13] = {Int64GetDatum(static_cast<int64>(queue->pushed())),
                        Int64GetDatum(static_cast<int64>(queue->completed.load())),
                        Int64GetDatum(static_cast<int64>(queue->depth())),
                        Int64GetDatum(static_cast<int64>(queue->refused.load())),
                        Int32GetDatum(static_cast<int32>(queue->capacity())),
                        Int32GetDatum(static_cast<int32>(shared_state->worker_pid)),
                        Int64GetDatum(static_cast<int64>(queue->batches.load())),
                        text_datum(server_name()),
                        text_datum(standby ? "standby" : "primary"),
                        Int64GetDatum(static_cast<int64>(pg_atomic_read_u64(&f.forwarded_rows))),
                        Int64GetDatum(static_cast<int64>(pg_atomic_read_u64(&f.spool_rows))),
                        Int64GetDatum(static_cast<int64>(pg_atomic_read_u64(&f.spool_bytes))),
                        text_datum(connection)};
    bool nulls[13] = {false,
                      false,
                      false,
                      false,
                      false,
                      shared_state->worker_pid == 0,
                      false,
                      false,
                      false,
                      false,
                      false,
                      false,
                      connection.empty()};
    return composite_result(fcinfo, values, nulls);
}

// flint._counters(): (name, value) rows for flint.metrics, from shared memory.
Datum counters_body(FunctionCallInfo fcinfo) {
    pg_guard([] { require_preload_unsafe(); });
    ReturnSetInfo *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
    pg_guard([&] { InitMaterializedSRF(fcinfo, 0); });
    auto put = [&](const char *name, uint64 value) {
        Datum values[2] = {text_datum(name), Int64GetDatum(static_cast<int64>(value))};
        bool nulls[2] = {false, false};
        pg_guard([&] { tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls); });
    };
    for (int c = 0; c <= static_cast<int>(kLastCode); ++c)
        put(code_name(static_cast<Code>(c)), pg_atomic_read_u64(&shared_state->outcome_counts[c]));
    put("cache_hits", pg_atomic_read_u64(&shared_state->cache_hits));
    put("cache_misses", pg_atomic_read_u64(&shared_state->cache_misses));
    int64 oldest = shared_state->queue->oldest_at();
    put("worker_lag_us", oldest ? static_cast<uint64>(std::max<int64>(0, GetCurrentTimestamp() - oldest)) : 0);
    return (Datum)0;
}

Datum flush_log_body(FunctionCallInfo) {
    flush_log();
    PG_RETURN_VOID();
}

} // namespace
} // namespace flint::pg

using namespace flint::pg;
FLINT_SQL_FUNCTION(flint_flush_log, flush_log_body)
FLINT_SQL_FUNCTION(flint_log_status, log_status_body)
FLINT_SQL_FUNCTION(flint_counters, counters_body)
