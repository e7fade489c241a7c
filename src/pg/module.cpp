// _PG_init: GUCs, shared memory (as pg_stat_statements does), the log worker.
#include "error_boundary.hpp"
#include "key_store.hpp"
#include "state.hpp"
#include "auth_context.hpp"
#include "scrub.hpp"
#include "error_context.hpp"
#include "log_worker.hpp"
#include "forwarder.hpp"
#include "traffic.hpp"

extern "C" {
#include "parser/analyze.h"
#include "tcop/utility.h"
PG_MODULE_MAGIC;
PGDLLEXPORT void _PG_init(void);
}

namespace flint::pg {

SharedState *shared_state = nullptr;
bool in_log_worker = false;
bool in_bookkeeping = false;

bool guc_key_cache = true;
int guc_key_cache_size = 100000;
int guc_key_cache_total_mb = 1024;
int guc_log_queue_size = 16384;
int guc_log_queue_wait_ms = 1000;
int guc_log_flush_interval_ms = 50;
int guc_log_batch_size = 10000;
bool guc_log_direct_insert = true;
int guc_last_used_interval_ms = 60000;
int guc_rate_limit_slots = 131072;
int guc_quota_slots = 16384;
int guc_quota_lease = 10000;
char *guc_database = nullptr;
char *guc_request_id = nullptr;
char *guc_log_retention = nullptr;
char *guc_usage_retention = nullptr;
char *guc_primary_conninfo = nullptr;
int guc_log_spool_size_mb = 1024;
int guc_merchant_share = 10;
bool guc_log_refusals = false;
int guc_refusal_summary_interval_ms = 60000;

namespace {

shmem_request_hook_type prev_shmem_request_hook = nullptr;
emit_log_hook_type prev_emit_log_hook = nullptr;
bool refusal_raised = false; // the next ERROR is a refused verification

// Every message bound for the server log passes here. A flint token in the
// message, detail, hint, context or query is masked after its display prefix,
// and a statement holding one is not logged: log_statement,
// log_min_duration_statement and log_min_error_statement would otherwise
// write secrets that applications sent as literals or bind parameters.
// Cheap when there is nothing to do: a strstr for "fk_" per field.
// A statement whose token was masked in place (below) before the message:
// its text as sent, for scrub_fragments (backend-local, wiped when replaced).
const char *masked_statement = nullptr;
std::string statement_as_sent;

void forget_statement_as_sent() {
    std::fill(statement_as_sent.begin(), statement_as_sent.end(), '\0');
    statement_as_sent.clear();
    masked_statement = nullptr;
}

// Utility statements (COPY (SELECT ...) TO, EXPLAIN, DECLARE, PREPARE) reach
// pg_stat_statements, pg_prepared_statements and the server log with their
// literals: a token among them is masked in the statement's text itself,
// once parsed (execution uses the parse tree; the text keeps its length, so
// every statement location in it still holds).
void mask_statement_text(const char *text) {
    if (!text || !flint::contains_token(text))
        return;
    if (text != masked_statement) {
        forget_statement_as_sent();
        try {
            statement_as_sent = text;
            masked_statement = text;
        } catch (...) { // out of memory: masked all the same, no fragments looked for
            forget_statement_as_sent();
        }
    }
    flint::scrub_tokens(const_cast<char *>(text));
}

post_parse_analyze_hook_type prev_post_parse_analyze_hook = nullptr;
ProcessUtility_hook_type prev_process_utility_hook = nullptr;

void mask_utility_after_analysis(ParseState *pstate, Query *query, JumbleState *jstate) {
    if (prev_post_parse_analyze_hook)
        prev_post_parse_analyze_hook(pstate, query, jstate);
    if (query->commandType == CMD_UTILITY)
        mask_statement_text(pstate->p_sourcetext);
}

// The extended protocol runs a utility statement from its cached copy of
// the text, which analysis did not see: masked here, before
// pg_stat_statements records it (when preloaded before flint_keys, as the
// README's shared_preload_libraries line has it).
void mask_utility_before_run(PlannedStmt *pstmt, const char *query_string, bool read_only_tree,
                             ProcessUtilityContext context, ParamListInfo params, QueryEnvironment *query_env,
                             DestReceiver *dest, QueryCompletion *qc) {
    mask_statement_text(query_string);
    if (prev_process_utility_hook)
        prev_process_utility_hook(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc);
    else
        standard_ProcessUtility(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc);
}

void scrub_log_message(ErrorData *edata) {
    // A refused verification is in the request log and in the counters; under
    // a credential-stuffing flood one server-log line per call would drown
    // the log, so by default the worker writes one summary a minute instead.
    if (refusal_raised && edata->elevel == ERROR) {
        refusal_raised = false;
        // Only a verification's own refusal (class FK), never another error
        // raised after one that a PL/pgSQL handler caught.
        if (!guc_log_refusals && PGUNSIXBIT(edata->sqlerrcode) == 'F' && PGUNSIXBIT(edata->sqlerrcode >> 6) == 'K')
            edata->output_to_server = false;
    }
    // Pieces of a token the statement holds, quoted without prefix or
    // checksum (a parser's CONTEXT shows a long line's tail), then tokens.
    const char *source = debug_query_string && debug_query_string == masked_statement ? statement_as_sent.c_str()
                         : flint::contains_token(debug_query_string)                  ? debug_query_string
                                                                                      : nullptr;
    for (char *field :
         {edata->message, edata->detail, edata->detail_log, edata->hint, edata->context, edata->internalquery}) {
        try {
            flint::scrub_fragments(field, source);
            flint::scrub_fragments(field, edata->internalquery);
        } catch (...) { // out of memory (this may be its report): tokens are still masked
        }
        flint::scrub_tokens(field);
    }
    scrub_application_name();
    // What the user called raised it, not the internal helper it called.
    flint::drop_internal_frames(edata->context);
    if (flint::contains_token(debug_query_string))
        edata->hide_stmt = true;
    if (prev_emit_log_hook)
        prev_emit_log_hook(edata);
}
shmem_startup_hook_type prev_shmem_startup_hook = nullptr;

uint32_t queue_capacity() {
    uint32_t cap = 1;
    while (cap < static_cast<uint32_t>(guc_log_queue_size))
        cap <<= 1;
    return cap;
}

Size queue_bytes() { return add_size(MAXALIGN(sizeof(SharedState)) + 64, LogQueue::bytes_needed(queue_capacity())); }
Size shared_size() { return add_size(MAXALIGN(queue_bytes()), traffic_shmem_size()); }

void shmem_request() {
    if (prev_shmem_request_hook)
        prev_shmem_request_hook();
    RequestAddinShmemSpace(shared_size());
}

void shmem_startup() {
    if (prev_shmem_startup_hook)
        prev_shmem_startup_hook();
    bool found = false;
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    auto *state = static_cast<SharedState *>(ShmemInitStruct("flint_keys", shared_size(), &found));
    if (!found) {
        pg_atomic_init_u64(&state->keys_generation, 1);
        SpinLockInit(&state->key_invalidations.lock);
        state->key_invalidations.full_generation = 1;
        state->key_invalidations.dropped_generation = 0;
        state->key_invalidations.written = 0;
        pg_atomic_init_u64(&state->last_used_requested, 0);
        pg_atomic_init_u64(&state->last_used_written, 0);
        for (auto &count : state->outcome_counts)
            pg_atomic_init_u64(&count, 0);
        pg_atomic_init_u64(&state->cache_hits, 0);
        pg_atomic_init_u64(&state->cache_misses, 0);
        pg_atomic_init_u64(&state->key_cache_bytes, 0);
        pg_atomic_init_u64(&state->untallied_until, 0);
        state->worker_latch = nullptr;
        state->worker_pid = 0;
        ForwardState &f = state->forward;
        for (pg_atomic_uint64 *v : {&f.spooled_seq, &f.forwarded_seq, &f.spool_bytes, &f.spool_rows, &f.forwarded_rows})
            pg_atomic_init_u64(v, 0);
        pg_atomic_init_u32(&f.spool_ready, 0);
        pg_atomic_init_u32(&f.spool_full, 0);
        pg_atomic_init_u32(&f.recount, 0);
        pg_atomic_init_u32(&state->spool_shares.seq, 0);
        pg_atomic_init_u32(&state->spool_shares.count, 0);
        f.forwarder_latch = nullptr;
        f.forwarder_pid = 0;
        SpinLockInit(&f.lock);
        f.connection[0] = '\0';
        char *after = reinterpret_cast<char *>(state) + MAXALIGN(sizeof(SharedState));
        void *aligned = reinterpret_cast<void *>(TYPEALIGN(64, after));
        state->queue = LogQueue::create(aligned, queue_capacity());
    }
    traffic_shmem_init(reinterpret_cast<char *>(state) + MAXALIGN(queue_bytes()), found);
    LWLockRelease(AddinShmemInitLock);
    shared_state = state;
}

} // namespace

// application_name is the client's: a token set there is masked in the
// setting itself (the jsonlog and csvlog field, log_line_prefix's %a and
// pg_stat_activity read it from there).
void scrub_application_name() {
    if (application_name && flint::contains_token(application_name)) {
        flint::scrub_tokens(application_name);
        pgstat_report_appname(application_name);
    }
}

namespace {

void server_log_scrubber_init() {
    prev_emit_log_hook = emit_log_hook;
    emit_log_hook = scrub_log_message;
    prev_post_parse_analyze_hook = post_parse_analyze_hook;
    post_parse_analyze_hook = mask_utility_after_analysis;
    prev_process_utility_hook = ProcessUtility_hook;
    ProcessUtility_hook = mask_utility_before_run;
}

// As pg_stat_statements does: ask for the segment, attach it at startup.
void shared_memory_init() {
    prev_shmem_request_hook = shmem_request_hook;
    shmem_request_hook = shmem_request;
    prev_shmem_startup_hook = shmem_startup_hook;
    shmem_startup_hook = shmem_startup;
}

void define_gucs() {
    // PGC_POSTMASTER settings can only be defined while preloading; without
    // preload nothing uses them (every function that would asks for it).
    if (process_shared_preload_libraries_in_progress) {
        DefineCustomStringVariable("flint.database", "Database whose flint.request_log the log worker writes.",
                                   "Verification in any other database fails: its log rows would have nowhere to go.",
                                   &guc_database, "postgres", PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
        DefineCustomIntVariable(
            "flint.rate_limit_slots",
            "Rate-limit buckets (keys and merchants with a limit) this server keeps in shared memory.",
            "A bucket that is full again is reused; with none free, calls fail closed.", &guc_rate_limit_slots, 131072,
            1024, 1 << 24, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
        DefineCustomIntVariable("flint.quota_slots", "Keys with a quota whose leased units this server holds.", nullptr,
                                &guc_quota_slots, 16384, 1024, 1 << 22, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
        DefineCustomIntVariable("flint.log_queue_size",
                                "Request-log records the shared queue holds (rounded up to a power of two).", nullptr,
                                &guc_log_queue_size, 16384, 64, 1 << 22, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
    }
    DefineCustomIntVariable("flint.merchant_share",
                            "Percent of the rate-limit and quota tables, and of a primary's half-full log spool, "
                            "one merchant may hold.",
                            "Past it that merchant's new limited keys, or its verifications while its rows fill the "
                            "spool, fail with their own error; other merchants always find room.",
                            &guc_merchant_share, 10, 1, 100, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomBoolVariable("flint.log_refusals", "Write one server-log ERROR line per refused verification.",
                             "Off: refusals are counted and summed up in one LOG line per "
                             "flint.refusal_summary_interval (they are always in the request log).",
                             &guc_log_refusals, false, PGC_SUSET, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("flint.refusal_summary_interval",
                            "How often the log worker sums up refused verifications in one server-log line.", nullptr,
                            &guc_refusal_summary_interval_ms, 60000, 1000, 3600000, PGC_SIGHUP, GUC_UNIT_MS, nullptr,
                            nullptr, nullptr);
    DefineCustomStringVariable("flint.request_id", "The caller's request id, copied into each request-log row.",
                               "Set it per transaction: SET LOCAL flint.request_id = '...'.", &guc_request_id, "",
                               PGC_USERSET, 0, nullptr, nullptr, nullptr);
    DefineCustomBoolVariable("flint.key_cache", "Keep verified keys in a backend-local cache.",
                             "Invalidated by every committed change to keys, merchants or scopes.", &guc_key_cache,
                             true, PGC_SUSET, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("flint.key_cache_size",
                            "Most keys the backend-local key cache holds (a 176-byte slot each); past it, the "
                            "least recently used key of a set is evicted.",
                            nullptr, &guc_key_cache_size, 100000, 16, 10000000, PGC_SUSET, 0, nullptr, nullptr,
                            nullptr);
    DefineCustomIntVariable("flint.key_cache_total",
                            "Most memory all backends' key caches hold together; a cache that would pass it stays at "
                            "its size (keys it cannot hold are read from the table).",
                            "0: no server-wide bound (each backend is still bounded by flint.key_cache_size).",
                            &guc_key_cache_total_mb, 1024, 0, INT_MAX / 2, PGC_SIGHUP, GUC_UNIT_MB, nullptr, nullptr,
                            nullptr);
    DefineCustomIntVariable(
        "flint.log_queue_wait", "How long a verification waits for room in a full log queue before failing closed.",
        nullptr, &guc_log_queue_wait_ms, 1000, 0, 60000, PGC_SUSET, GUC_UNIT_MS, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("flint.log_flush_interval", "How often the log worker drains the queue.", nullptr,
                            &guc_log_flush_interval_ms, 50, 1, 60000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr,
                            nullptr);
    DefineCustomIntVariable("flint.log_batch_size", "Most rows the log worker inserts in one transaction.", nullptr,
                            &guc_log_batch_size, 10000, 1, 100000, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomBoolVariable("flint.log_direct_insert",
                             "Whether the log worker inserts its batches without COPY (heap multi-insert, then "
                             "each index in its own key order).",
                             "Off: binary COPY, as before 1.3 (for comparison; a table of another shape uses COPY "
                             "anyway).",
                             &guc_log_direct_insert, true, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable(
        "flint.last_used_interval", "How often the log worker writes last_used_at (its resolution).",
        "At most one UPDATE per key per interval, whatever the traffic.", &guc_last_used_interval_ms, 60000, 100,
        3600000, PGC_SIGHUP, GUC_UNIT_MS, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("flint.quota_lease",
                            "Quota units the log worker leases at a time per key (what a crash can forfeit).",
                            "The worker tops a lease up when half of it is spent, so callers rarely wait.",
                            &guc_quota_lease, 10000, 1, 1000000, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomStringVariable("flint.log_retention",
                               "Request-log partitions older than this are dropped by the worker ('' keeps all).",
                               nullptr, &guc_log_retention, "", PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomStringVariable("flint.usage_retention",
                               "Usage rollups (flint.usage) older than this are deleted by the worker ('' keeps all).",
                               "Separate from flint.log_retention: rollups outlive the raw log.", &guc_usage_retention,
                               "400 days", PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomStringVariable("flint.primary_conninfo",
                               "How a standby's forwarder connects to the primary ('' : primary_conninfo).",
                               "Empty: the standby's own primary_conninfo with dbname = flint.database.",
                               &guc_primary_conninfo, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("flint.log_spool_size",
                            "Most log data the durable spool holds: a standby's rows while the primary is "
                            "unreachable, a primary's while its table insert is held up.",
                            "Past it verification fails closed (log_queue_full).", &guc_log_spool_size_mb, 1024, 1,
                            1024 * 1024, PGC_SIGHUP, GUC_UNIT_MB, nullptr, nullptr, nullptr);
    MarkGUCPrefixReserved("flint");
}

} // namespace

void note_refusal_raised() { refusal_raised = true; }

const std::string &server_name() {
    static std::string name;
    if (name.empty())
        name = cluster_name && cluster_name[0] ? std::string(cluster_name) : std::to_string(GetSystemIdentifier());
    return name;
}

void require_preload_unsafe() {
    if (!shared_state)
        ereport(ERROR,
                (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                 errmsg("flint_keys must be loaded via shared_preload_libraries"),
                 errhint("Add shared_preload_libraries = 'flint_keys' to postgresql.conf and restart the server.")));
}

} // namespace flint::pg

// Loaded on demand (no preload), only the GUCs, callbacks and the log
// scrubber are set up: functions that need shared memory say how to fix it.
extern "C" void _PG_init(void) {
    using namespace flint::pg;
    define_gucs();
    key_store_init();
    auth_context_init();
    server_log_scrubber_init();
    if (!process_shared_preload_libraries_in_progress)
        return;
    shared_memory_init();
    log_worker_register();
    forwarder_register();
}
