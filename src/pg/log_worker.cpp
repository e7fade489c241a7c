// The request-log background worker (after pg_cron's loop and worker_spi):
// drains the shared queue in batches, one transaction per batch, inserting
// each batch with a binary COPY FROM memory; maintains last_used_at from the
// same stream and keeps the daily partitions of flint.request_log.
#include <map>

#include "datums.hpp"
#include "guard.hpp"
#include "request_log.hpp"
#include "state.hpp"

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

constexpr const char *kLastUsedSql =
    "UPDATE flint.api_keys k SET last_used_at = u.at FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at) "
    "WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)";

SPIPlanPtr last_used_plan = nullptr;

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

struct LastUsed {
    Uuid key_id;
    TimestampTz at;
};

bool log_table_exists_unsafe() {
    Oid nsp = get_namespace_oid("flint", true);
    return OidIsValid(nsp) && OidIsValid(get_relname_relid("request_log", nsp));
}

void prepare_plans_unsafe() {
    if (!last_used_plan) {
        Oid types[2] = {UUIDARRAYOID, TIMESTAMPTZARRAYOID};
        SPIPlanPtr p = SPI_prepare(kLastUsedSql, 2, types);
        if (!p)
            elog(ERROR, "flint_keys: could not prepare the last_used_at update");
        SPI_keepplan(p);
        last_used_plan = p;
    }
}

void begin_transaction_unsafe(const char *activity) {
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    SPI_connect();
    PushActiveSnapshot(GetTransactionSnapshot());
    pgstat_report_activity(STATE_RUNNING, activity);
}

MemoryContext worker_context = nullptr; // reset once per loop

void commit_transaction_unsafe() {
    SPI_finish();
    PopActiveSnapshot();
    CommitTransactionCommand();
    MemoryContextSwitchTo(worker_context);
    pgstat_report_activity(STATE_IDLE, nullptr);
}

// Inserts one batch (binary COPY into flint.request_log: tuple routing to
// the day's partition, multi-row inserts) and moves last_used_at forward.
// False when flint.request_log does not exist (the rows are dropped).
bool insert_batch_unsafe(const char *copy_data, size_t copy_len, const LastUsed *last_used, int last_used_count) {
    begin_transaction_unsafe("flint_keys: inserting request-log rows");
    if (!log_table_exists_unsafe()) {
        commit_transaction_unsafe();
        return false;
    }
    Relation rel = table_open(get_relname_relid("request_log", get_namespace_oid("flint", false)), RowExclusiveLock);
    ParseState *pstate = make_parsestate(nullptr);
    // CopyFrom finds its target as range-table entry 1, as DoCopy sets it up.
    ParseNamespaceItem *nsitem = addRangeTableEntryForRelation(pstate, rel, RowExclusiveLock, nullptr, false, false);
    nsitem->p_rte->requiredPerms = ACL_INSERT;
    List *options = list_make1(makeDefElem(pstrdup("format"), (Node *)makeString(pstrdup("binary")), -1));
    copy_source = {copy_data, copy_len, 0};
    CopyFromState cstate = BeginCopyFrom(pstate, rel, nullptr, nullptr, false, read_copy_source, NIL, options);
    CopyFrom(cstate);
    EndCopyFrom(cstate);
    table_close(rel, NoLock);

    if (last_used_count > 0) {
        prepare_plans_unsafe();
        Datum *ids = static_cast<Datum *>(palloc(sizeof(Datum) * last_used_count));
        Datum *ats = static_cast<Datum *>(palloc(sizeof(Datum) * last_used_count));
        for (int i = 0; i < last_used_count; ++i) {
            ids[i] = uuid_datum(last_used[i].key_id);
            ats[i] = TimestampTzGetDatum(last_used[i].at);
        }
        Datum p[2] = {PointerGetDatum(construct_array(ids, last_used_count, UUIDOID, 16, false, TYPALIGN_CHAR)),
                      PointerGetDatum(construct_array(ats, last_used_count, TIMESTAMPTZOID, 8, true, TYPALIGN_DOUBLE))};
        if (SPI_execute_plan(last_used_plan, p, nullptr, false, 0) != SPI_OK_UPDATE)
            elog(ERROR, "flint_keys: last_used_at update failed");
    }
    commit_transaction_unsafe();
    return true;
}

void maintain_partitions_unsafe(bool *found_table) {
    begin_transaction_unsafe("flint_keys: maintaining request-log partitions");
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

// Drains the queue; false when a batch failed (it stays pending for the next try).
// Each wake-up inserts what is queued, then keeps going only while whole
// batches are waiting: under load, rows gather for the flush interval instead
// of trickling into tiny transactions that each pay a commit.
bool drain(bool until_empty = false) {
    LogQueue *queue = shared_state->queue;
    const size_t batch_size = static_cast<size_t>(guc_log_batch_size);
    for (bool first = true;; first = false) {
        if (!first && !until_empty && pending.empty() && queue->depth() < batch_size)
            return true;
        LogRecord r;
        while (pending.size() < batch_size && queue->try_pop(r))
            pending.push_back(r); // only flint.database verifies: see emit_log_record
        if (pending.empty())
            return true;
        maintain_if_due(true);
        // last_used_at: at most one update per key per batch.
        std::map<Uuid, TimestampTz> newest;
        for (const LogRecord &rec : pending)
            if (rec.outcome == Code::ok && rec.has_key_id) {
                auto &at = newest[rec.key_id];
                at = std::max(at, static_cast<TimestampTz>(rec.at));
            }
        std::vector<LastUsed> last_used;
        for (const auto &[id, at] : newest)
            last_used.push_back({id, at});
        const std::string copy_data = encode_copy_binary(pending.data(), pending.size());
        bool inserted = false;
        bool ok = run_transaction([&] {
            inserted = insert_batch_unsafe(copy_data.data(), copy_data.size(), last_used.data(),
                                           static_cast<int>(last_used.size()));
        });
        if (!ok)
            return false;
        if (!inserted)
            pg_guard([&] {
                ereport(WARNING, (errmsg("flint_keys: flint.request_log does not exist; dropped %d log rows",
                                         static_cast<int>(pending.size()))));
            });
        queue->completed.fetch_add(pending.size());
        queue->batches.fetch_add(1);
        pending.clear();
    }
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
        failing = !drain();
        if (shutdown_requested) {
            // Backends stopping with us may still queue a row: drain until quiet.
            for (int quiet = 0; quiet < 5 && !failing;) {
                bool had = shared_state->queue->depth() > 0;
                failing = !drain(true);
                quiet = had ? 0 : quiet + 1;
                pg_usleep(20 * 1000);
            }
            break;
        }
    }
}

} // namespace
} // namespace flint::pg

void register_log_worker() {
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
    // and ends the worker (the postmaster restarts it after a second).
    PendingError pending_error;
    bool failed = false;
    try {
        worker_loop();
    } catch (...) {
        capture_exception(pending_error);
        failed = true;
    }
    if (failed) {
        pending_error.hide_statement = false;
        raise_pending(pending_error);
    }
    proc_exit(0);
}
