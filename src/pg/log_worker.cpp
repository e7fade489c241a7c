// The request-log background worker (after pg_cron's loop and worker_spi):
// drains the shared queue in batches, one transaction per batch, inserting
// each batch by heap multi-insert (binary COPY for a table of another shape); maintains last_used_at from the
// same stream and keeps the daily partitions of flint.request_log.
//
// Locking rule: the worker serves every merchant, so it never waits without
// bound on a lock a user session can hold. Every lock wait is cut by
// lock_timeout (kInsertLockTimeout for inserts, kHousekeepingLockTimeout for
// maintenance and last_used_at); the main job (inserting rows) never depends
// on housekeeping succeeding: partitions exist a week ahead (and the default
// partition takes rows of a day whose partition is missing); last_used_at
// rows locked by someone else are skipped (SKIP LOCKED) and retried later.
// Table statistics are reported after every transaction, so autovacuum and
// autoanalyze see the log partitions and api_keys.
#include <malloc.h>
#include <new>

#include "datums.hpp"
#include "log_insert.hpp"
#include "spool.hpp"
#include "error_boundary.hpp"
#include "log_worker.hpp"
#include "last_used.hpp"
#include "last_used_sql.hpp"
#include "overflow.hpp"
#include "request_log.hpp"
#include "state.hpp"
#include "traffic.hpp"
#include "worker_process.hpp"

extern "C" {
#include "executor/spi.h"
#include "postmaster/interrupt.h"
#include "tcop/tcopprot.h"
#include "access/xlog.h"

PGDLLEXPORT void flint_log_worker_main(Datum);
}

namespace flint::pg {

namespace {

// last_used_at moves with kRecordLastUsedSql (last_used_sql.hpp). Of the
// ids it skipped (locked by another session), those whose key still exists (kept for the next try).
constexpr const char *kStillThereSql = "SELECT id FROM flint.api_keys WHERE id = ANY($1::uuid[])";

// An insert that cannot have its lock within 100 ms (a DBA's lock on the
// log) gives way: the batch goes to the spool, and for kInsertBackoffMs the
// worker spools instead of trying again, so that quota leases and the queue
// are served every pass meanwhile.
constexpr const char *kInsertLockTimeout = "100ms";
constexpr int kInsertBackoffMs = 1000;
TimestampTz insert_again_at = 0;
TimestampTz spool_insert_again_at = 0;
TimestampTz last_live_insert = 0; // when a batch from the queue last went into the table
constexpr const char *kHousekeepingLockTimeout = "100ms";

SPIPlanPtr last_used_plan = nullptr;
SPIPlanPtr still_there_plan = nullptr;

LastUsedTracker last_used; // newest successful use per key since the last flush
TimestampTz next_last_used_flush = 0;

bool log_table_exists_unsafe() { return OidIsValid(log_table_unsafe().relid); }

SPIPlanPtr prepare_unsafe(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types) {
    if (!*plan) {
        SPIPlanPtr p = SPI_prepare(sql, nargs, types);
        if (!p)
            elog(ERROR, "flint_keys: could not prepare %s", sql);
        SPI_keepplan(p);
        *plan = p;
    }
    return *plan;
}

// The worker's bookkeeping on flint.api_keys (last_used_at, quota leases) is
// neither a key event nor a change verification reads: its UPDATEs run
// with session_replication_role = replica, so no ordinary trigger fires.
void skip_triggers_unsafe() {
    (void)set_config_option("session_replication_role", "replica", PGC_SUSET, PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0,
                            false);
}

// Every worker transaction waits at most `lock_timeout` for any lock.
void begin_transaction_unsafe(const char *activity, const char *lock_timeout) {
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    SPI_connect();
    PushActiveSnapshot(GetTransactionSnapshot());
    pgstat_report_activity(STATE_RUNNING, activity);
    (void)set_config_option("lock_timeout", lock_timeout, PGC_SUSET, PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0, false);
}

MemoryContext worker_context = nullptr; // reset once per loop

void commit_transaction_unsafe() {
    SPI_finish();
    PopActiveSnapshot();
    CommitTransactionCommand();
    MemoryContextSwitchTo(worker_context);
    // Forced: the unforced call judges its 1 s rate limit by the commit's own
    // timestamp and, with no later commit, would hold the counts back for
    // good. One flush per batch is cheap; autovacuum must see every batch.
    pgstat_report_stat(true);
    pgstat_report_activity(STATE_IDLE, nullptr);
}

// How batches are encoded: as flint.request_log's columns were last seen (a
// 1.1 table has neither cost nor server).
bool encode_cost = true, encode_server = true;

std::string encode_batch(const LogRecord *rows, size_t n, const uint32_t *order, const std::string &server) {
    return encode_copy_binary(rows, n, encode_cost, order, encode_server ? server.c_str() : nullptr);
}

// Inserts one batch (binary COPY into flint.request_log: tuple routing to
// the day's partition, multi-row inserts). False when flint.request_log
// does not exist (the rows are dropped). When the table's columns differ
// from how the batch was encoded, sets *reencode and inserts nothing.
// *mark: the usage mark the batch's late rows were judged by.
bool insert_batch_unsafe(const char *copy_data, size_t copy_len, bool *reencode, int64 *mark) {
    begin_transaction_unsafe("flint_keys: inserting request-log rows", kInsertLockTimeout);
    LogTable table = log_table_unsafe();
    if (!OidIsValid(table.relid)) {
        commit_transaction_unsafe();
        return false;
    }
    if (table.has_cost != encode_cost || table.has_server != encode_server) {
        encode_cost = table.has_cost;
        encode_server = table.has_server;
        *reencode = true;
        commit_transaction_unsafe();
        return true;
    }
    (void)copy_into_log_unsafe(table, copy_data, copy_len, mark);
    commit_transaction_unsafe();
    return true;
}

// The same without COPY (flint.log_direct_insert): sets *done when it
// inserted the batch or found no table (then returns false, as above);
// leaves *done false, inserting nothing, for a table of another shape.
bool insert_batch_direct_unsafe(const std::vector<LogRecord> &rows, bool *done, int64 *mark) {
    begin_transaction_unsafe("flint_keys: inserting request-log rows", kInsertLockTimeout);
    LogTable table = log_table_unsafe();
    bool exists = OidIsValid(table.relid);
    *done = !exists || (table.has_cost && table.has_server &&
                        insert_rows_direct_unsafe(table, rows.data(), rows.size(), server_name().c_str(), mark));
    commit_transaction_unsafe();
    return exists;
}

// The ids in SPI's result (one uuid column) into `out`.
void collect_ids_unsafe(std::vector<Uuid> *out) {
    for (uint64 i = 0; i < SPI_processed; ++i) {
        bool isnull;
        Datum d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
        Uuid id;
        std::memcpy(id.data(), DatumGetUUIDP(d)->data, id.size());
        out->push_back(id);
    }
}

// One UPDATE for the keys used since the last flush. Fills `done` with the
// ids it locked and `kept` with skipped ids whose key still exists.
void flush_last_used_unsafe(const Uuid *ids, const TimestampTz *ats, int n, std::vector<Uuid> *done,
                            std::vector<Uuid> *kept) {
    begin_transaction_unsafe("flint_keys: updating last_used_at", kHousekeepingLockTimeout);
    skip_triggers_unsafe();
    Datum *at_datums = static_cast<Datum *>(palloc(sizeof(Datum) * std::max(n, 1)));
    for (int i = 0; i < n; ++i)
        at_datums[i] = TimestampTzGetDatum(ats[i]);
    Oid types[2] = {UUIDARRAYOID, TIMESTAMPTZARRAYOID};
    Datum p[2] = {uuid_array_datum(ids, n),
                  PointerGetDatum(construct_array(at_datums, n, TIMESTAMPTZOID, 8, true, TYPALIGN_DOUBLE))};
    if (SPI_execute_plan(prepare_unsafe(&last_used_plan, kRecordLastUsedSql, 2, types), p, nullptr, false, 0) < 0)
        elog(ERROR, "flint_keys: last_used_at update failed");
    collect_ids_unsafe(done);
    if (done->size() < static_cast<size_t>(n)) {
        // Rare: only keys someone holds locked. palloc'd: no C++ object lives here.
        Uuid *skipped = static_cast<Uuid *>(palloc(sizeof(Uuid) * n));
        int nskipped = 0;
        for (int i = 0; i < n; ++i)
            if (std::find(done->begin(), done->end(), ids[i]) == done->end())
                skipped[nskipped++] = ids[i];
        Datum q[1] = {uuid_array_datum(skipped, nskipped)};
        Oid qtypes[1] = {UUIDARRAYOID};
        if (SPI_execute_plan(prepare_unsafe(&still_there_plan, kStillThereSql, 1, qtypes), q, nullptr, true, 0) < 0)
            elog(ERROR, "flint_keys: last_used_at lookup failed");
        collect_ids_unsafe(kept);
    }
    commit_transaction_unsafe();
}

void maintain_partitions_unsafe(bool *found_table) {
    begin_transaction_unsafe("flint_keys: maintaining request-log partitions", kHousekeepingLockTimeout);
    *found_table = log_table_exists_unsafe();
    if (*found_table) {
        const char *retention = guc_log_retention && guc_log_retention[0] ? guc_log_retention : nullptr;
        Oid types[1] = {TEXTOID};
        Datum args[1] = {retention ? CStringGetTextDatum(retention) : (Datum)0};
        char nulls[1] = {retention ? ' ' : 'n'};
        SPI_execute_with_args("SELECT flint._maintain_request_log(current_date, $1::interval)", 1, types, args, nulls,
                              false, 0);
        // Rollups have their own retention (1.3: flint.usage and _prune_usage).
        const char *usage_retention = guc_usage_retention && guc_usage_retention[0] ? guc_usage_retention : nullptr;
        if (usage_retention && OidIsValid(get_relname_relid("usage", get_namespace_oid("flint", false)))) {
            Datum uargs[1] = {CStringGetTextDatum(usage_retention)};
            SPI_execute_with_args("SELECT flint._prune_usage($1::interval)", 1, types, uargs, nullptr, false, 0);
        }
    }
    commit_transaction_unsafe();
}

// Runs a transaction body; on error reports it, aborts, and returns false.
template <class Fn> bool run_transaction(Fn &&fn) {
    overflow_worker_busy(true);
    struct NotBusy {
        ~NotBusy() { overflow_worker_busy(false); }
    } not_busy;
    try {
        pg_guard(fn);
        return true;
    } catch (const PgError &e) {
        ErrorData *edata = e.edata();
        pg_guard([&] {
            AbortCurrentTransaction();
            MemoryContextSwitchTo(worker_context);
            edata->elevel = WARNING;
            ThrowErrorData(edata);
        });
        return false;
    }
}

std::vector<LogRecord> pending; // popped, not yet committed (retried after an error)
TimestampTz next_maintenance = 0;
bool maintained_table = false; // the last maintenance found flint.request_log

// Partitions first, so that rows land in their day's partition: at start,
// every minute, after a reload, and before a batch while the extension was
// not found (it may be created after the worker starts).
void maintain_if_due(bool have_rows) {
    bool due = GetCurrentTimestamp() >= next_maintenance || (have_rows && !maintained_table);
    if (!due)
        return;
    bool found = false;
    if (run_transaction([&] { maintain_partitions_unsafe(&found); }))
        maintained_table = found;
    next_maintenance = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 60 * 1000);
}

// Usage rollups (1.3): flint.usage holds the log rows before the mark
// (flint.usage_watermark); flint_usage reads the rest from the log. Each
// step adds the rows between the mark and the step's end and moves the mark
// there, in one transaction (the mark's row lock orders it against batches,
// which read the mark FOR SHARE). Rows of that time still queued are added
// as they are inserted (late rows).
//
// A step writes the worker's tally of the rows it inserted (usage_rollup.hpp)
// when the tally is known to hold every row from the mark on: it then reads
// nothing back, and a 10-s step writes each (minute, key, outcome) once
// instead of once per 2 s. Otherwise (after a start or a promotion, a mark
// someone else moved, forwarded or spooled rows from the mark on, a tally
// that was dropped) steps read the rows from the table
// (flint._roll_up_usage), 2 s each, until the mark passes that time.
//
// Steps are short, one a pass: quota leases wait for them (at 25,000
// rows/s a whole minute read from the table took the worker 3 to 6 s in one
// transaction, and a quota key under load was refused). The mark stays
// behind the oldest row in the spool (a checkpoint storm's overflow):
// inserted later, such rows would each be a late row, an upsert into
// flint.usage that cost the spool's insert 2.5 times the insert itself.
constexpr int64 kScanStep = 2 * USECS_PER_SEC;
constexpr int64 kTallyStep = 10 * USECS_PER_SEC;
constexpr int64 kMaxTallyStep = 60 * USECS_PER_SEC; // catching up from the tally: at most a minute a pass
constexpr size_t kMaxTallyGroups = 1000000;         // about 80 MB; past it the tally is dropped
static_assert(kScanStep % UsageTally::kSlotMicros == 0 && kTallyStep % kScanStep == 0);

UsageTally tally;
TimestampTz tally_complete_from = PG_INT64_MAX; // every row from here on is in the tally (none yet)
TimestampTz mark_written = PG_INT64_MIN;        // the mark as this worker's last step set it
TimestampTz no_mark_until = 0;                  // no flint.usage_watermark (1.2) or no mark: look again then

// The rows of a batch just committed that the tally holds: those from the
// mark its late rows were judged by (PG_INT64_MAX: no flint.usage).
void tally_batch(int64 mark) {
    if (mark == PG_INT64_MAX) { // no flint.usage: a step must not vouch for these rows
        tally_complete_from = GetCurrentTimestamp();
        return;
    }
    bool dropped = false;
    try {
        for (const LogRecord &r : pending)
            if (r.at >= mark)
                tally.add(r);
    } catch (const std::bad_alloc &) {
        dropped = true;
    }
    if (dropped || tally.size() > kMaxTallyGroups) { // read the table until now
        tally.clear();
        tally_complete_from = GetCurrentTimestamp();
    }
}

bool tally_covers(TimestampTz mark) {
    const int64 untallied = static_cast<int64>(pg_atomic_read_u64(&shared_state->untallied_until));
    return mark >= tally_complete_from && mark > untallied && mark % UsageTally::kSlotMicros == 0;
}

// Where a step from `mark` would end, by the path it would take.
TimestampTz step_end(TimestampTz mark, TimestampTz limit) {
    if (tally_covers(mark))
        return std::min(floor_to(limit, kTallyStep), mark + kMaxTallyStep);
    return std::min(floor_to(limit, kScanStep), floor_to(mark, kScanStep) + kScanStep);
}

void roll_up_usage_if_due() {
    TimestampTz limit = GetCurrentTimestamp();
    const int64_t oldest_spooled = oldest_spooled_at();
    if (oldest_spooled == INT64_MIN)
        return; // the spool's oldest row is not known: wait until it is inserted
    if (oldest_spooled != INT64_MAX)
        limit = std::min(limit, oldest_spooled);
    if (mark_written != PG_INT64_MIN ? step_end(mark_written, limit) <= mark_written : limit < no_mark_until)
        return; // nothing due (a mark someone else moved is seen at the next step)
    bool from_tally = false;
    TimestampTz upto = 0;
    bool done = run_transaction([&] {
        begin_transaction_unsafe("flint_keys: rolling up usage", kHousekeepingLockTimeout);
        Oid nsp = get_namespace_oid("flint", true);
        if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid("usage_watermark", nsp)) ||
            !OidIsValid(get_relname_relid("usage", nsp))) {
            no_mark_until = limit + kScanStep;
            mark_written = PG_INT64_MIN;
            commit_transaction_unsafe();
            return;
        }
        SPI_connect();
        if (SPI_execute("SELECT rolled_up_to FROM flint.usage_watermark FOR UPDATE", false, 1) != SPI_OK_SELECT)
            elog(ERROR, "flint_keys: could not read flint.usage_watermark");
        bool isnull = true;
        const TimestampTz mark =
            SPI_processed == 1
                ? DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull))
                : 0;
        if (isnull) { // no mark: nothing is rolled up
            no_mark_until = limit + kScanStep;
            mark_written = PG_INT64_MIN;
            SPI_finish();
            commit_transaction_unsafe();
            return;
        }
        if (mark != mark_written) { // moved by someone else (or unknown yet): the tally cannot vouch for the rows
            tally_complete_from = std::max(GetCurrentTimestamp(), mark);
            mark_written = mark;
        }
        from_tally = tally_covers(mark);
        upto = step_end(mark, limit);
        if (upto > mark) {
            Oid types[1] = {TIMESTAMPTZOID};
            Datum args[1] = {TimestampTzGetDatum(upto)};
            if (from_tally) {
                add_usage_unsafe(tally.take(mark, upto));
                if (SPI_execute_with_args("UPDATE flint.usage_watermark SET rolled_up_to = $1", 1, types, args, nullptr,
                                          false, 0) != SPI_OK_UPDATE)
                    elog(ERROR, "flint_keys: could not move the usage mark");
            } else if (SPI_execute_with_args("SELECT flint._roll_up_usage($1)", 1, types, args, nullptr, false, 0) !=
                       SPI_OK_SELECT) {
                elog(ERROR, "flint_keys: usage roll-up failed");
            }
        }
        SPI_finish();
        commit_transaction_unsafe();
    });
    if (!done) {
        if (from_tally) // the step's groups left the tally: read the table from here on
            tally_complete_from = GetCurrentTimestamp();
        return;
    }
    if (upto > mark_written) {
        if (!from_tally)
            tally.forget_before(upto); // read from the table
        mark_written = upto;
        pg_guard([&] {
            elog(DEBUG1, "flint_keys: usage rolled up to %s from the %s", timestamptz_to_str(upto),
                 from_tally ? "tally" : "table");
        });
    }
}

// Quota units for the backends waiting on them (README "Traffic controls":
// leased before spent, so a crash forfeits units and never grants extra).
// One transaction per pass for at most kLeasesPerPass keys; a key row that
// someone holds locked is skipped, not waited for (SKIP LOCKED), and asked
// again on a later pass: a merchant that locks its own keys delays only its
// own quota calls, and the drain never waits behind it.
// A skipped key is asked again kLeaseRetryMs later, not on every pass: its
// callers keep waking the worker, which must not spin on rows it cannot lock.
constexpr size_t kLeasesPerPass = 1000;
constexpr int kLeaseRetryMs = 100;
std::unordered_map<Uuid, TimestampTz, UuidHash> lease_skipped_until;

void serve_leases() {
    std::vector<LeaseRequest> requests = pending_lease_requests();
    if (requests.empty())
        return;
    TimestampTz now = GetCurrentTimestamp();
    bool deferred = false;
    requests.erase(std::remove_if(requests.begin(), requests.end(),
                                  [&](const LeaseRequest &r) {
                                      auto it = lease_skipped_until.find(r.id);
                                      if (it == lease_skipped_until.end())
                                          return false;
                                      if (now >= it->second) {
                                          lease_skipped_until.erase(it);
                                          return false;
                                      }
                                      deferred = true;
                                      return true;
                                  }),
                   requests.end());
    if (deferred)
        retry_leases_later();
    if (requests.empty())
        return;
    if (requests.size() > kLeasesPerPass) {
        requests.resize(kLeasesPerPass);
        retry_leases_later();
    }
    std::vector<int64> granted(requests.size(), 0);
    std::vector<bool> served(requests.size(), false);
    bool ok = run_transaction([&] {
        begin_transaction_unsafe("flint_keys: leasing quota units", kHousekeepingLockTimeout);
        skip_triggers_unsafe();
        lock_lease_keys_unsafe(requests, &served);
        for (size_t i = 0; i < requests.size(); ++i)
            if (served[i])
                lease_quota_unsafe(requests[i], &granted[i]);
        commit_transaction_unsafe();
    });
    bool skipped = !ok;
    for (size_t i = 0; ok && i < requests.size(); ++i) {
        if (served[i]) {
            apply_lease(requests[i], granted[i]);
        } else {
            skipped = true;
            lease_skipped_until[requests[i].id] = TimestampTzPlusMilliseconds(now, kLeaseRetryMs);
        }
    }
    if (lease_skipped_until.size() > 4 * kLeasesPerPass)
        lease_skipped_until.clear(); // keys gone or served elsewhere: forget, at worst one more try each
    if (skipped)
        retry_leases_later();
}

// Inserts `pending` (a primary); false when the transaction failed.
TimestampTz copy_until = 0; // the direct insert found a table it does not know: COPY until then
bool insert_pending() {
    maintain_if_due(true);
    bool inserted = false, reencode = false, ok = true, done = false;
    int64 mark = PG_INT64_MAX;
    if (guc_log_direct_insert && GetCurrentTimestamp() >= copy_until) {
        ok = run_transaction([&] { inserted = insert_batch_direct_unsafe(pending, &done, &mark); });
        if (ok && !done) // a table of another shape: COPY for a while
            copy_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 60 * 1000);
    }
    // For COPY, in key order: the (key_id, ...) index takes the batch leaf
    // after leaf instead of at random, flat cost whatever the number of
    // keys. (An order of indexes: the 300-byte records stay where they are.
    // The direct insert sorts each index's entries itself.)
    std::vector<uint32_t> order;
    if (!done && ok) {
        order.resize(pending.size());
        for (uint32_t i = 0; i < order.size(); ++i)
            order[i] = i;
        std::sort(order.begin(), order.end(),
                  [](uint32_t x, uint32_t y) { return pending[x].key_id < pending[y].key_id; });
    }
    for (int attempt = 0; !done && attempt < 2 && ok && (attempt == 0 || reencode); ++attempt) {
        reencode = false;
        const std::string copy_data = encode_batch(pending.data(), pending.size(), order.data(), server_name());
        ok = run_transaction(
            [&] { inserted = insert_batch_unsafe(copy_data.data(), copy_data.size(), &reencode, &mark); });
    }
    if (ok && reencode)
        ok = false; // the table changed twice in a row: try again on the next wake-up
    if (!ok)
        return false;
    if (!inserted)
        pg_guard([&] {
            ereport(WARNING, (errmsg("flint_keys: flint.request_log does not exist; dropped %d log rows",
                                     static_cast<int>(pending.size()))));
        });
    else
        last_used.note(pending.data(), pending.size());
    if (inserted)
        tally_batch(mark);
    last_live_insert = GetCurrentTimestamp();
    return true;
}

// The spool's batches of this worker run: its origin, and the last batch id
// (the overflow thread numbers its batches from the same counter).
Uuid spool_origin{};
std::atomic<uint64_t> spool_batch_id{0};

// Durably spools `pending` (a standby's rows for the forwarder, or a
// primary's batch its insert could not take); false on an I/O error.
bool spool_pending() {
    try {
        spool_rows(spool_origin, &spool_batch_id, server_name(), pending.data(), pending.size());
    } catch (const FlintError &e) {
        std::string message = e.what();
        pg_guard([&] { ereport(WARNING, (errmsg("%s", message.c_str()), errhint("%s", e.hint().c_str()))); });
        return false;
    }
    return true;
}

// A primary: inserts `pending`; when the insert fails (a lock held past
// kInsertLockTimeout, or any other error) the batch goes to the spool, to be
// inserted later, instead of being retried in the way of the queue. False
// when neither worked (the batch stays pending).
bool store_pending() {
    if (GetCurrentTimestamp() >= insert_again_at) {
        if (insert_pending())
            return true;
        insert_again_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), kInsertBackoffMs);
    }
    return pending.size() <= spool_room_rows() && spool_pending();
}

// Drains the queue; false when a batch failed (it stays pending for the next try).
// Each wake-up stores what is queued, then keeps going while whole batches
// are waiting, plus the remainder behind a full batch (a backlog is drained
// at once): under load, rows gather for the flush interval instead of
// trickling into tiny transactions that each pay a commit.
// A primary inserts the rows; a standby spools them for the forwarder, and
// past flint.log_spool_size leaves them queued (the queue then fills and
// verifications fail closed), except at shutdown, when the queue is spooled
// whatever its size rather than lost.
bool drain(bool until_empty = false) {
    LogQueue *queue = shared_state->queue;
    const size_t batch_size = static_cast<size_t>(guc_log_batch_size);
    const bool standby = RecoveryInProgress();
    bool last_was_full = false;
    for (bool first = true;; first = false) {
        if (!first && !until_empty && !last_was_full && pending.empty() && queue->depth() < batch_size)
            return true;
        size_t take = batch_size;
        if (standby && !worker_stop_requested) {
            take = std::min(take, spool_room_rows());
            pg_atomic_write_u32(&shared_state->forward.spool_full, take == 0 && queue->depth() > 0);
            if (take == 0 && pending.empty())
                return true;
        } else if (!standby) {
            serve_leases(); // before every batch: a waiting quota caller never waits for a whole drain
        }
        LogRecord r;
        while (pending.size() < take && queue_pop(r))
            pending.push_back(r); // only flint.database verifies: see emit_log_record
        if (pending.empty())
            return true;
        last_was_full = pending.size() == batch_size;
        if (!(standby ? spool_pending() : store_pending()))
            return false;
        queue->completed.fetch_add(pending.size());
        queue->batches.fetch_add(1);
        pending.clear();
    }
}

// A primary inserts what is left in the spool (after a promotion, or a
// standby's data directory started as a primary), oldest first, each batch
// once: the same origin check as forwarded batches, so a batch the old
// primary had already received (and replay brought here) is skipped.
// False while a batch fails (retried on the next pass).
constexpr int kSpoolBatchTries = 5;
uint64_t failing_batch = 0; // the spooled batch whose insert failed last, and how often in a row
int failing_batch_tries = 0;
TimestampTz failing_batch_at = 0;

bool insert_spool(size_t max_batches = SIZE_MAX) {
    std::string bytes;
    for (uint64_t seq : spool_sequences()) {
        if (max_batches-- == 0)
            break;
        SpoolBatch batch;
        try {
            if (!spool_load(seq, &bytes, &batch))
                continue; // gone, or damaged and set aside
        } catch (const FlintError &) {
            return false;
        }
        // As the forwarder sends it (receive_batch_unsafe takes the 1.2 columns).
        const std::string copy_data =
            encode_copy_binary(batch.rows.data(), batch.rows.size(), true, nullptr, batch.server.c_str());
        bool fresh = false;
        uint64 rows = 0;
        bool ok = run_transaction([&] {
            begin_transaction_unsafe("flint_keys: inserting spooled request-log rows", kInsertLockTimeout);
            fresh = receive_batch_unsafe(batch.origin, static_cast<int64>(batch.batch_id), batch.server.c_str(),
                                         copy_data.data(), copy_data.size(), &rows);
            commit_transaction_unsafe();
        });
        if (!ok) {
            // A batch the table refuses while live batches go in (a constraint
            // a DBA added, a table too old for its columns) would hold the
            // spool forever: after kSpoolBatchTries such tries it is set aside.
            // Counted only when a live batch went in since this one's last failure.
            bool live_inserts_work = last_live_insert > failing_batch_at;
            if (failing_batch != seq)
                failing_batch_tries = 0;
            if (failing_batch != seq || live_inserts_work)
                ++failing_batch_tries;
            failing_batch = seq;
            failing_batch_at = GetCurrentTimestamp();
            if (failing_batch_tries >= kSpoolBatchTries) {
                const std::string message = "flint_keys: spool batch " + spool_file_name(seq) + " was refused by " +
                                            "flint.request_log " + std::to_string(failing_batch_tries) +
                                            " times while other batches went in; set aside as " + spool_file_name(seq) +
                                            ".damaged";
                pg_guard([&] { ereport(WARNING, (errmsg("%s", message.c_str()))); });
                try {
                    spool_set_aside(seq, bytes.size(), batch.rows.size());
                    spool_shares_removed(batch.rows.data(), batch.rows.size());
                } catch (const FlintError &) {
                }
            }
            return false;
        }
        if (fresh)
            last_used.note(batch.rows.data(), batch.rows.size());
        try {
            spool_remove(seq, bytes.size(), batch.rows.size());
        } catch (const FlintError &) {
            return false;
        }
        spool_shares_removed(batch.rows.data(), batch.rows.size());
    }
    return true;
}

void report_overflow_error() {
    std::string error = overflow_take_error();
    if (!error.empty())
        pg_guard([&] { ereport(WARNING, (errmsg("%s", error.c_str()))); });
}

// One server-log line per flint.refusal_summary_interval sums up the refused verifications (their
// per-call ERROR lines are off unless flint.log_refusals): a credential-
// stuffing flood does not drown the server log, and is still seen there.
TimestampTz next_refusal_summary = 0;
uint64 refusals_seen[kOutcomeSlots] = {};

void summarize_refusals() {
    TimestampTz now = GetCurrentTimestamp();
    if (now < next_refusal_summary)
        return;
    bool first = next_refusal_summary == 0;
    next_refusal_summary = TimestampTzPlusMilliseconds(now, guc_refusal_summary_interval_ms);
    std::string by_code;
    uint64 total = 0;
    for (int c = static_cast<int>(Code::ok) + 1; c <= static_cast<int>(kLastCode); ++c) {
        if (!is_refusal(static_cast<Code>(c)))
            continue;
        uint64 count = pg_atomic_read_u64(&shared_state->outcome_counts[c]);
        uint64 delta = count - refusals_seen[c];
        refusals_seen[c] = count;
        if (delta == 0 || first)
            continue;
        total += delta;
        by_code +=
            (by_code.empty() ? "" : ", ") + std::string(code_name(static_cast<Code>(c))) + " " + std::to_string(delta);
    }
    if (total > 0)
        pg_guard([&] {
            ereport(LOG, (errmsg("flint_keys: %llu verifications refused in the last %d s (%s)",
                                 static_cast<unsigned long long>(total), guc_refusal_summary_interval_ms / 1000,
                                 by_code.c_str()),
                          errdetail("Each is a row of flint.request_log; set flint.log_refusals = on for one "
                                    "server-log line per refusal.")));
        });
}

// Spooled batches inserted per pass while the queue is low: the queue, which
// a crash loses, always goes first.
constexpr size_t kSpoolBatchesPerPass = 2;

// Writes last_used_at once per flint.last_used_interval (and at shutdown):
// at most one UPDATE per key per interval, whatever the traffic. A round
// writes kLastUsedPerPass keys per pass, so that 100,000 keys used in an
// interval never hold the drain for one long transaction; forced (a flush,
// shutdown), it writes them all at once.
constexpr size_t kLastUsedPerPass = 2000;
size_t last_used_round_left = 0; // keys still to write in the current round

// Writes `ids`' newest uses now; false when the transaction failed.
bool write_last_used(std::vector<Uuid> &ids, std::vector<int64_t> &ats) {
    std::vector<Uuid> done, kept;
    bool ok = run_transaction(
        [&] { flush_last_used_unsafe(ids.data(), ats.data(), static_cast<int>(ids.size()), &done, &kept); });
    if (!ok)
        return false;
    last_used.mark_written(done, GetCurrentTimestamp());
    last_used.forget(ids, kept);
    last_used.defer(kept); // out of this round's later parts
    return true;
}

void flush_last_used_if_due(bool force) {
    last_used.set_interval(int64_t{guc_last_used_interval_ms} * 1000);
    if (!force && last_used.urgent() > 0) {
        // First uses: within this pass, so a new key never reads "never used".
        std::vector<Uuid> ids;
        std::vector<int64_t> ats;
        last_used.take_urgent(&ids, &ats, kLastUsedPerPass);
        if (!ids.empty() && !write_last_used(ids, ats))
            return; // they stay pending: the round writes them
    }
    if (force && last_used.deferred() > 0) { // asked for: keys locked earlier get one more try now
        last_used.restore();
        last_used_round_left = std::max(last_used_round_left, last_used.size());
    }
    if (last_used_round_left == 0) {
        if (!force && GetCurrentTimestamp() < next_last_used_flush)
            return;
        last_used.restore(); // keys locked elsewhere last round: try them again
        last_used_round_left = last_used.size();
        if (last_used_round_left == 0)
            return;
        last_used.prune_written(GetCurrentTimestamp());
        next_last_used_flush = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), guc_last_used_interval_ms);
    }
    do {
        std::vector<Uuid> ids;
        std::vector<int64_t> ats;
        // A timed round leaves keys written within the interval (a first use
        // just written) for the next; flint_flush_log() writes them all.
        last_used.snapshot(&ids, &ats, std::min(kLastUsedPerPass, last_used_round_left),
                           force ? -1 : GetCurrentTimestamp());
        if (ids.empty()) {
            last_used_round_left = 0;
            break;
        }
        if (!write_last_used(ids, ats))
            return; // tried again on the next pass
        last_used_round_left -= std::min(last_used_round_left, ids.size());
        serve_leases();
    } while (force && last_used_round_left > 0);
}

// At shutdown: backends stopping with us may still queue a row, so drain
// until the queue has stayed empty for a while (or a batch fails).
void drain_until_quiet(bool failing) {
    for (int quiet = 0; quiet < 5 && !failing;) {
        bool had = shared_state->queue->depth() > 0;
        failing = !drain(true);
        quiet = had ? 0 : quiet + 1;
        pg_usleep(20 * 1000);
    }
}

void worker_loop() {
    in_log_worker = true;
    // Each pass allocates and frees a batch's tuples; keep that memory in the
    // process instead of returning it to the kernel and faulting it in again
    // (page faults were a fifth of the worker's CPU under load).
    (void)mallopt(M_MMAP_THRESHOLD, 32 << 20);
    (void)mallopt(M_TRIM_THRESHOLD, 256 << 20);
    worker_context = AllocSetContextCreate(TopMemoryContext, "flint_keys log worker", ALLOCSET_DEFAULT_SIZES);
    pg_guard([] {
        if (!pg_strong_random(spool_origin.data(), spool_origin.size()))
            elog(ERROR, "flint_keys: no random bytes for the spool's origin");
    });
    spool_account_at_start();
    bool failing = false;
    bool spool_to_insert = true; // checked at start, and again after a promotion
    LogQueue *queue = shared_state->queue;
    for (;;) {
        pg_guard([&] {
            (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                            failing ? 1000 : guc_log_flush_interval_ms, PG_WAIT_EXTENSION);
            ResetLatch(MyLatch);
            CHECK_FOR_INTERRUPTS();
            if (ConfigReloadPending) {
                ConfigReloadPending = false;
                ProcessConfigFile(PGC_SIGHUP);
                next_maintenance = 0; // a new flint.log_retention applies at once
            }
            MemoryContextSwitchTo(worker_context);
            MemoryContextReset(worker_context);
        });
        if (pg_atomic_read_u32(&shared_state->forward.recount))
            spool_recount_in_worker(); // a batch was set aside
        if (RecoveryInProgress()) {
            // A standby: rows go to the spool; the forwarder does the rest.
            spool_to_insert = true;
            failing = !drain();
            if (worker_stop_requested) {
                drain_until_quiet(failing);
                break;
            }
            continue;
        }
        overflow_start(spool_origin, &spool_batch_id, server_name()); // once, on a primary
        // Quota callers wait on the worker: leases are served between every
        // step of its work (drain serves them before each batch), so none
        // waits for more than one step.
        maintain_if_due(false);
        serve_leases();
        failing = !drain();
        if (!failing) {
            roll_up_usage_if_due();
            serve_leases();
        }
        overflow_worker_failing(failing);
        report_overflow_error();
        summarize_refusals();
        // flint_flush_log() waits for last_used_at and the spool too: write them now if asked.
        uint64 requested = pg_atomic_read_u64(&shared_state->last_used_requested);
        bool asked = requested != pg_atomic_read_u64(&shared_state->last_used_written);
        if (asked && !failing)
            failing = !drain(true);
        // The spool (overflow, or a standby's rows after a promotion) once
        // the queue is low: a few batches a pass, all of them when asked.
        bool spooled = spool_to_insert || pg_atomic_read_u64(&shared_state->forward.spool_rows) > 0;
        // Its own backoff: a batch the table refuses must not send live rows to the spool.
        if (spooled && !failing && GetCurrentTimestamp() >= spool_insert_again_at &&
            (asked || queue->depth() < static_cast<uint64_t>(guc_log_batch_size))) {
            spool_to_insert = !insert_spool(asked ? SIZE_MAX : kSpoolBatchesPerPass);
            if (spool_to_insert)
                spool_insert_again_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), kInsertBackoffMs);
            serve_leases();
        }
        flush_last_used_if_due(asked);
        if (asked && !failing)
            pg_atomic_write_u64(&shared_state->last_used_written, requested);
        if (worker_stop_requested) {
            drain_until_quiet(failing);
            overflow_stop(); // what the thread holds goes to the spool
            (void)insert_spool();
            flush_last_used_if_due(true);
            break;
        }
    }
}

} // namespace

// On a hot standby too: there it spools its rows for the forwarder.
void log_worker_register() { worker_register("flint_keys log worker", "flint_log_worker_main"); }

} // namespace flint::pg

// Errors inside the loop are caught per transaction.
extern "C" void flint_log_worker_main(Datum) {
    using namespace flint::pg;
    worker_run("flint_keys log worker", guc_database, &shared_state->worker_latch, &shared_state->worker_pid,
               worker_loop);
}
