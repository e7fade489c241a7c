// The request-log background worker (after pg_cron's loop and worker_spi):
// drains the shared queue in batches, one transaction per batch, inserting
// each batch with a binary COPY FROM memory; maintains last_used_at from the
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
#include "datums.hpp"
#include "error_boundary.hpp"
#include "log_worker.hpp"
#include "last_used.hpp"
#include "request_log.hpp"
#include "state.hpp"
#include "traffic.hpp"

extern "C" {
#include "executor/spi.h"
#include "postmaster/interrupt.h"
#include "tcop/tcopprot.h"
#include "commands/copy.h"
#include "nodes/makefuncs.h"
#include "parser/parse_node.h"
#include "parser/parse_relation.h"

PGDLLEXPORT void flint_log_worker_main(Datum);
}

namespace flint::pg {

namespace {

volatile sig_atomic_t shutdown_requested = false;

void handle_sigterm(SIGNAL_ARGS) {
    int save_errno = errno;
    shutdown_requested = true;
    SetLatch(MyLatch);
    errno = save_errno;
}

void forget_latch(int, Datum) {
    if (shared_state) {
        shared_state->worker_latch = nullptr;
        shared_state->worker_pid = 0;
    }
}

// Moves last_used_at forward for the keys it can lock at once; returns the
// ids it locked (done). Keys locked by another session are skipped, not waited for.
constexpr const char *kLastUsedSql =
    "WITH u AS MATERIALIZED (SELECT * FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at)), "
    "locked AS MATERIALIZED (SELECT k.id FROM flint.api_keys k WHERE k.id = ANY ($1::uuid[]) "
    "                        FOR UPDATE SKIP LOCKED), "
    "moved AS (UPDATE flint.api_keys k SET last_used_at = u.at FROM locked l JOIN u ON u.id = l.id "
    "          WHERE k.id = l.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)) "
    "SELECT id FROM locked";
// Of the skipped ids, those whose key still exists (kept for the next try).
constexpr const char *kStillThereSql = "SELECT id FROM flint.api_keys WHERE id = ANY($1::uuid[])";

constexpr const char *kInsertLockTimeout = "1s";
constexpr const char *kHousekeepingLockTimeout = "100ms";

SPIPlanPtr last_used_plan = nullptr;
SPIPlanPtr still_there_plan = nullptr;

// The batch in binary COPY format, read by COPY FROM through this callback.
struct CopySource {
    const char *data;
    size_t len;
    size_t pos;
};
CopySource copy_source;

int read_copy_source(void *outbuf, int, int maxread) {
    size_t n = std::min(static_cast<size_t>(maxread), copy_source.len - copy_source.pos);
    std::memcpy(outbuf, copy_source.data + copy_source.pos, n);
    copy_source.pos += n;
    return static_cast<int>(n);
}

LastUsedTracker last_used; // newest successful use per key since the last flush
TimestampTz next_last_used_flush = 0;

bool log_table_exists_unsafe() {
    Oid nsp = get_namespace_oid("flint", true);
    return OidIsValid(nsp) && OidIsValid(get_relname_relid("request_log", nsp));
}

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

bool copy_with_cost = true; // flint.request_log has the cost column (1.2); the batch is encoded to match

// Inserts one batch (binary COPY into flint.request_log, naming its columns:
// tuple routing to the day's partition, multi-row inserts).
// False when flint.request_log does not exist (the rows are dropped). When
// the table's columns differ from how the batch was encoded, sets
// *reencode and inserts nothing.
bool insert_batch_unsafe(const char *copy_data, size_t copy_len, bool *reencode) {
    begin_transaction_unsafe("flint_keys: inserting request-log rows", kInsertLockTimeout);
    if (!log_table_exists_unsafe()) {
        commit_transaction_unsafe();
        return false;
    }
    Oid relid = get_relname_relid("request_log", get_namespace_oid("flint", false));
    bool has_cost = get_attnum(relid, "cost") != InvalidAttrNumber;
    if (has_cost != copy_with_cost) {
        copy_with_cost = has_cost;
        *reencode = true;
        commit_transaction_unsafe();
        return true;
    }
    Relation rel = table_open(relid, RowExclusiveLock);
    ParseState *pstate = make_parsestate(nullptr);
    // CopyFrom finds its target as range-table entry 1, as DoCopy sets it up.
    ParseNamespaceItem *nsitem = addRangeTableEntryForRelation(pstate, rel, RowExclusiveLock, nullptr, false, false);
    nsitem->p_rte->requiredPerms = ACL_INSERT;
    List *options = list_make1(makeDefElem(pstrdup("format"), (Node *)makeString(pstrdup("binary")), -1));
    copy_source = {copy_data, copy_len, 0};
    List *columns = NIL;
    for (const char *name : kCopyColumns)
        if (has_cost || std::strcmp(name, "cost") != 0)
            columns = lappend(columns, makeString(pstrdup(name)));
    CopyFromState cstate = BeginCopyFrom(pstate, rel, nullptr, nullptr, false, read_copy_source, columns, options);
    CopyFrom(cstate);
    EndCopyFrom(cstate);
    table_close(rel, NoLock);
    commit_transaction_unsafe();
    return true;
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

Datum uuid_array_unsafe(const Uuid *ids, int n) {
    Datum *elems = static_cast<Datum *>(palloc(sizeof(Datum) * std::max(n, 1)));
    for (int i = 0; i < n; ++i)
        elems[i] = uuid_datum(ids[i]);
    return PointerGetDatum(construct_array(elems, n, UUIDOID, 16, false, TYPALIGN_CHAR));
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
    Datum p[2] = {uuid_array_unsafe(ids, n),
                  PointerGetDatum(construct_array(at_datums, n, TIMESTAMPTZOID, 8, true, TYPALIGN_DOUBLE))};
    if (SPI_execute_plan(prepare_unsafe(&last_used_plan, kLastUsedSql, 2, types), p, nullptr, false, 0) < 0)
        elog(ERROR, "flint_keys: last_used_at update failed");
    collect_ids_unsafe(done);
    if (done->size() < static_cast<size_t>(n)) {
        // Rare: only keys someone holds locked. palloc'd: no C++ object lives here.
        Uuid *skipped = static_cast<Uuid *>(palloc(sizeof(Uuid) * n));
        int nskipped = 0;
        for (int i = 0; i < n; ++i)
            if (std::find(done->begin(), done->end(), ids[i]) == done->end())
                skipped[nskipped++] = ids[i];
        Datum q[1] = {uuid_array_unsafe(skipped, nskipped)};
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
    }
    commit_transaction_unsafe();
}

// Runs a transaction body; on error reports it, aborts, and returns false.
template <class Fn> bool run_transaction(Fn &&fn) {
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

// Quota units for the backends waiting on them, each lease its own short
// transaction (README "Traffic controls": leased before spent, so a crash
// forfeits units and never grants extra).
void serve_leases() {
    for (const LeaseRequest &r : pending_lease_requests()) {
        int64 granted = 0;
        bool ok = run_transaction([&] {
            begin_transaction_unsafe("flint_keys: leasing quota units", kHousekeepingLockTimeout);
            skip_triggers_unsafe();
            lease_quota_unsafe(r, &granted);
            commit_transaction_unsafe();
        });
        if (ok)
            apply_lease(r, granted);
        else
            retry_leases_later();
    }
}

// Drains the queue; false when a batch failed (it stays pending for the next try).
// Each wake-up inserts what is queued, then keeps going while whole batches
// are waiting, plus the remainder behind a full batch (a backlog is drained
// at once): under load, rows gather for the flush interval instead of
// trickling into tiny transactions that each pay a commit.
bool drain(bool until_empty = false) {
    LogQueue *queue = shared_state->queue;
    const size_t batch_size = static_cast<size_t>(guc_log_batch_size);
    bool last_was_full = false;
    for (bool first = true;; first = false) {
        if (!first && !until_empty && !last_was_full && pending.empty() && queue->depth() < batch_size)
            return true;
        serve_leases(); // before every batch: a waiting quota caller never waits for a whole drain
        LogRecord r;
        while (pending.size() < batch_size && queue->try_pop(r))
            pending.push_back(r); // only flint.database verifies: see emit_log_record
        if (pending.empty())
            return true;
        last_was_full = pending.size() == batch_size;
        maintain_if_due(true);
        // In key order, the (key_id, ...) index takes the batch leaf after
        // leaf instead of at random: flat cost whatever the number of keys.
        // (An order of indexes: the 300-byte records stay where they are.)
        std::vector<uint32_t> order(pending.size());
        for (uint32_t i = 0; i < order.size(); ++i)
            order[i] = i;
        std::sort(order.begin(), order.end(),
                  [](uint32_t x, uint32_t y) { return pending[x].key_id < pending[y].key_id; });
        bool inserted = false, reencode = false, ok = true;
        for (int attempt = 0; attempt < 2 && ok && (attempt == 0 || reencode); ++attempt) {
            reencode = false;
            const std::string copy_data =
                encode_copy_binary(pending.data(), pending.size(), copy_with_cost, order.data());
            ok =
                run_transaction([&] { inserted = insert_batch_unsafe(copy_data.data(), copy_data.size(), &reencode); });
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
        if (inserted)
            last_used.note(pending.data(), pending.size());
        queue->completed.fetch_add(pending.size());
        queue->batches.fetch_add(1);
        pending.clear();
    }
}

// Writes last_used_at once per flint.last_used_interval (and at shutdown):
// at most one UPDATE per key per interval, whatever the traffic.
void flush_last_used_if_due(bool force) {
    if (last_used.size() == 0 || (!force && GetCurrentTimestamp() < next_last_used_flush))
        return;
    std::vector<Uuid> ids, done, kept;
    std::vector<int64_t> ats;
    last_used.snapshot(&ids, &ats);
    bool ok = run_transaction(
        [&] { flush_last_used_unsafe(ids.data(), ats.data(), static_cast<int>(ids.size()), &done, &kept); });
    if (ok)
        last_used.forget_all_but(kept);
    next_last_used_flush = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), guc_last_used_interval_ms);
}

void worker_loop() {
    worker_context = AllocSetContextCreate(TopMemoryContext, "flint_keys log worker", ALLOCSET_DEFAULT_SIZES);
    bool failing = false;
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
        maintain_if_due(false);
        failing = !drain(); // serves waiting quota leases first, and between batches
        // flint_flush_log() waits for last_used_at too: write it now if asked.
        uint64 requested = pg_atomic_read_u64(&shared_state->last_used_requested);
        bool asked = requested != pg_atomic_read_u64(&shared_state->last_used_written);
        if (asked && !failing)
            failing = !drain(true);
        flush_last_used_if_due(asked);
        if (asked && !failing)
            pg_atomic_write_u64(&shared_state->last_used_written, requested);
        if (shutdown_requested) {
            // Backends stopping with us may still queue a row: drain until quiet.
            for (int quiet = 0; quiet < 5 && !failing;) {
                bool had = shared_state->queue->depth() > 0;
                failing = !drain(true);
                quiet = had ? 0 : quiet + 1;
                pg_usleep(20 * 1000);
            }
            flush_last_used_if_due(true);
            break;
        }
    }
}

} // namespace

void log_worker_register() {
    BackgroundWorker worker;
    std::memset(&worker, 0, sizeof worker);
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
    worker.bgw_restart_time = 5; // seconds; also the retry while flint.database does not exist yet
    strlcpy(worker.bgw_library_name, "flint_keys", BGW_MAXLEN);
    strlcpy(worker.bgw_function_name, "flint_log_worker_main", BGW_MAXLEN);
    strlcpy(worker.bgw_name, "flint_keys log worker", BGW_MAXLEN);
    strlcpy(worker.bgw_type, "flint_keys log worker", BGW_MAXLEN);
    RegisterBackgroundWorker(&worker);
}

} // namespace flint::pg

extern "C" void flint_log_worker_main(Datum) {
    using namespace flint::pg;
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, handle_sigterm);
    BackgroundWorkerUnblockSignals();
    BackgroundWorkerInitializeConnection(guc_database, nullptr, 0);
    in_log_worker = true;
    shared_state->worker_pid = MyProcPid;
    shared_state->worker_latch = &MyProc->procLatch;
    before_shmem_exit(forget_latch, 0);
    pgstat_report_appname("flint_keys log worker");

    // Errors inside are caught per transaction; anything escaping is a bug
    // and ends the worker through the one error boundary (the postmaster
    // restarts it after bgw_restart_time).
    call_cpp([] {
        worker_loop();
        return (Datum)0;
    });
    proc_exit(0);
}
