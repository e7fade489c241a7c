// The standby's log forwarder: a background worker, connected to no
// database of its own, that sends the spool's batches (spool.hpp) to the
// primary's flint.request_log over a libpq connection, oldest first, one
// call of flint._receive_log_batch per batch (the rows as binary COPY). The
// primary remembers each origin's highest batch id in the same transaction
// as the rows, so a batch sent twice (the forwarder died between the
// primary's commit and removing the file) is inserted once. It also moves
// last_used_at on the primary from the forwarded rows, once per
// flint.last_used_interval. On a primary it does nothing.
//
// A separate process from the log worker, so that a slow or unreachable
// primary (connect and statement timeouts) never delays spooling: the
// standby keeps verifying while the primary is away. Queries wait on the
// latch and the socket, so a stop request cancels one at once.
#include "error_boundary.hpp"
#include "forwarder.hpp"
#include "last_used.hpp"
#include "spool.hpp"
#include "state.hpp"
#include "worker_process.hpp"

extern "C" {
#include "access/xlog.h"
#include "access/xlogrecovery.h"
#include "postmaster/interrupt.h"
#include "libpq-fe.h"

PGDLLEXPORT void flint_forwarder_main(Datum);
}

namespace flint::pg {

namespace {

PGconn *conn = nullptr;
LastUsedTracker last_used; // newest forwarded use per key, not yet sent
TimestampTz next_last_used = 0;

void set_connection_state(const std::string &state) {
    ForwardState &f = shared_state->forward;
    SpinLockAcquire(&f.lock);
    strlcpy(f.connection, state.c_str(), sizeof f.connection);
    SpinLockRelease(&f.lock);
}

constexpr const char *kRefusedConninfo =
    "the connection string could not be parsed (check flint.primary_conninfo or primary_conninfo)";

// libpq's message, on one line. A message that quotes any part of the
// connection string (a malformed URI, a bad percent-encoding, an unknown
// option) could hold a password, and flint_log_status() is readable by
// pg_monitor: it is replaced, whatever libpq's wording.
std::string clean_message(std::string m) {
    for (const char *quoting : {"://", "password", "percent-encoded", "connection info string", "connection option",
                                "URI", "conninfo", "quoted string", "%"})
        if (m.find(quoting) != std::string::npos)
            return kRefusedConninfo;
    while (!m.empty() && (m.back() == '\n' || m.back() == ' '))
        m.pop_back();
    for (char &c : m)
        if (c == '\n')
            c = ' ';
    return m;
}

std::string last_error() { return clean_message(conn ? PQerrorMessage(conn) : ""); }

void disconnect() {
    if (conn)
        PQfinish(conn);
    conn = nullptr;
}

// flint.primary_conninfo, or the standby's own primary_conninfo; either way
// to the database flint.database names (the primary's, by replication).
bool connect_to_primary() {
    if (conn && PQstatus(conn) == CONNECTION_OK)
        return true;
    disconnect();
    std::string info = guc_primary_conninfo && guc_primary_conninfo[0] ? guc_primary_conninfo
                       : PrimaryConnInfo                               ? PrimaryConnInfo
                                                                       : "";
    if (info.empty()) {
        set_connection_state("not configured: set primary_conninfo or flint.primary_conninfo");
        return false;
    }
    // A string libpq cannot parse is refused here, before libpq can quote it.
    char *parse_error = nullptr;
    PQconninfoOption *parsed = PQconninfoParse(info.c_str(), &parse_error);
    if (parse_error)
        PQfreemem(parse_error);
    if (!parsed) {
        set_connection_state(std::string("unreachable: ") + kRefusedConninfo);
        return false;
    }
    PQconninfoFree(parsed);
    set_connection_state("connecting");
    // The first dbname is the whole connection string; the later keywords
    // override what it says.
    const char *keywords[] = {"dbname", "dbname", "application_name", "connect_timeout", "options", nullptr};
    const char *values[] = {
        info.c_str(), guc_database, "flint_keys forwarder", "5", "-c lock_timeout=5s -c statement_timeout=120s",
        nullptr};
    conn = PQconnectdbParams(keywords, values, 1);
    if (PQstatus(conn) != CONNECTION_OK) {
        set_connection_state("unreachable: " + last_error());
        disconnect();
        return false;
    }
    set_connection_state("connected");
    return true;
}

// Sends a query and waits for its result on the latch and the socket, so a
// stop request (SIGTERM) or the postmaster's death is seen at once: the
// query is cancelled and nullptr returned. Otherwise the last result.
PGresult *exec_interruptible(const char *sql, int nparams, const char *const *values, const int *lengths,
                             const int *formats) {
    if (!PQsendQueryParams(conn, sql, nparams, nullptr, values, lengths, formats, 0))
        return nullptr;
    PGresult *last = nullptr;
    for (;;) {
        while (PQisBusy(conn)) {
            int events = 0;
            pg_guard([&] {
                events = WaitLatchOrSocket(MyLatch, WL_LATCH_SET | WL_SOCKET_READABLE | WL_EXIT_ON_PM_DEATH,
                                           PQsocket(conn), -1, PG_WAIT_EXTENSION);
                ResetLatch(MyLatch);
            });
            if (worker_stop_requested) {
                if (PGcancel *cancel = PQgetCancel(conn)) {
                    char err[256];
                    (void)PQcancel(cancel, err, sizeof err);
                    PQfreeCancel(cancel);
                }
                if (last)
                    PQclear(last);
                return nullptr;
            }
            if ((events & WL_SOCKET_READABLE) && !PQconsumeInput(conn)) {
                if (last)
                    PQclear(last);
                return nullptr;
            }
        }
        PGresult *res = PQgetResult(conn);
        if (!res)
            return last;
        if (last)
            PQclear(last);
        last = res;
    }
}

// One query; false (and the connection state says why) when it failed.
bool run(const char *sql, int nparams, const char *const *values, const int *lengths, const int *formats,
         std::string *first_value = nullptr) {
    PGresult *res = exec_interruptible(sql, nparams, values, lengths, formats);
    bool ok = res && PQresultStatus(res) == PGRES_TUPLES_OK;
    if (ok && first_value && PQntuples(res) == 1)
        *first_value = PQgetvalue(res, 0, 0);
    if (!ok) {
        const char *msg = res ? PQresultErrorMessage(res) : nullptr;
        std::string why = worker_stop_requested ? std::string("stopping")
                          : msg && msg[0]       ? clean_message(msg)
                                                : last_error();
        if (worker_stop_requested || PQstatus(conn) != CONNECTION_OK) {
            set_connection_state((worker_stop_requested ? "" : "unreachable: ") + why);
            disconnect();
        } else {
            set_connection_state("error: " + why);
        }
    }
    if (res)
        PQclear(res);
    return ok;
}

// A batch the primary has committed, kept in the spool until this standby
// has replayed that commit: if the primary is lost before it streams here,
// the promoted standby still holds the batch and inserts it itself.
struct SentBatch {
    uint64_t seq;
    XLogRecPtr primary_lsn; // the primary's WAL position after its commit
    uint64_t bytes, rows;
};
std::vector<SentBatch> awaiting_replay;

bool already_sent(uint64_t seq) {
    for (const SentBatch &b : awaiting_replay)
        if (b.seq == seq)
            return true;
    return false;
}

// Removes the sent batches whose commit this standby has replayed.
void remove_replayed() {
    XLogRecPtr replayed = GetXLogReplayRecPtr(nullptr);
    size_t kept = 0;
    for (const SentBatch &b : awaiting_replay)
        if (b.primary_lsn <= replayed)
            spool_remove(b.seq, b.bytes, b.rows);
        else
            awaiting_replay[kept++] = b;
    awaiting_replay.resize(kept);
}

// Sends one batch; true when the primary has it (now or already).
bool forward_batch(uint64_t seq) {
    ForwardState &f = shared_state->forward;
    std::string bytes;
    SpoolBatch batch;
    if (!spool_load(seq, &bytes, &batch)) { // gone (a promotion), or damaged and set aside
        pg_atomic_write_u64(&f.forwarded_seq, std::max(seq, pg_atomic_read_u64(&f.forwarded_seq)));
        return true;
    }
    const std::string copy =
        encode_copy_binary(batch.rows.data(), batch.rows.size(), true, nullptr, batch.server.c_str());
    const std::string origin = uuid_to_string(batch.origin), id = std::to_string(batch.batch_id);
    const char *values[4] = {origin.c_str(), id.c_str(), batch.server.c_str(), copy.data()};
    int lengths[4] = {0, 0, 0, static_cast<int>(copy.size())};
    int formats[4] = {0, 0, 0, 1};
    if (!run("SELECT flint._receive_log_batch($1::uuid, $2::bigint, $3::text, $4::bytea)", 4, values, lengths, formats))
        return false;
    // Committed there (autocommit): where the primary's WAL stands now is at
    // or past that commit.
    std::string lsn_text;
    if (!run("SELECT pg_current_wal_insert_lsn()::text", 0, nullptr, nullptr, nullptr, &lsn_text))
        return false;
    uint32 hi = 0, lo = 0;
    if (std::sscanf(lsn_text.c_str(), "%X/%X", &hi, &lo) != 2)
        return false;
    set_connection_state("connected");
    last_used.note(batch.rows.data(), batch.rows.size());
    awaiting_replay.push_back({seq, (static_cast<uint64_t>(hi) << 32) | lo, bytes.size(), batch.rows.size()});
    pg_atomic_fetch_add_u64(&f.forwarded_rows, batch.rows.size());
    pg_atomic_write_u64(&f.forwarded_seq, seq);
    return true;
}

// Everything in the spool not yet sent, oldest first; false when the
// primary could not take a batch (it stays, and is retried). Stops at a
// promotion, and while the log worker is sizing the spool.
bool forward_spool() {
    remove_replayed();
    for (uint64_t seq : spool_sequences()) {
        if (already_sent(seq))
            continue;
        if (worker_stop_requested || !RecoveryInProgress() ||
            pg_atomic_read_u32(&shared_state->forward.spool_ready) == 0 || !connect_to_primary())
            return false;
        if (!forward_batch(seq))
            return false;
    }
    return true;
}

// last_used_at on the primary, from the forwarded rows (keys locked there
// are skipped: the next interval brings a newer use anyway).
bool send_last_used() {
    std::vector<Uuid> ids;
    std::vector<int64_t> ats;
    last_used.snapshot(&ids, &ats);
    if (ids.empty())
        return true;
    if (!connect_to_primary())
        return false;
    std::string id_list = "{", at_list = "{";
    for (size_t i = 0; i < ids.size(); ++i) {
        id_list += (i ? "," : "") + uuid_to_string(ids[i]);
        at_list += (i ? "," : "") + std::to_string(ats[i]);
    }
    id_list += "}";
    at_list += "}";
    const char *values[2] = {id_list.c_str(), at_list.c_str()};
    if (!run("SELECT flint._receive_last_used($1::uuid[], $2::bigint[])", 2, values, nullptr, nullptr))
        return false;
    last_used.forget_all_but({});
    return true;
}

void forwarder_loop() {
    bool failing = false;
    while (!worker_stop_requested) {
        pg_guard([&] {
            // Sent batches wait for replay: look again soon to remove them.
            long timeout = failing ? 1000 : awaiting_replay.empty() ? 5000 : 100;
            (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, timeout, PG_WAIT_EXTENSION);
            ResetLatch(MyLatch);
            if (ConfigReloadPending) {
                ConfigReloadPending = false;
                ProcessConfigFile(PGC_SIGHUP);
                disconnect(); // flint.primary_conninfo may have changed
            }
        });
        if (worker_stop_requested)
            break;
        if (!RecoveryInProgress()) { // a primary (or promoted): the log worker inserts the spool itself
            disconnect();
            set_connection_state("");
            failing = false;
            continue;
        }
        if (pg_atomic_read_u32(&shared_state->forward.spool_ready) == 0)
            continue;
        uint64 requested = pg_atomic_read_u64(&shared_state->last_used_requested);
        bool asked = requested != pg_atomic_read_u64(&shared_state->last_used_written);
        try {
            failing = !forward_spool();
        } catch (const FlintError &e) { // the spool's files: reported, retried
            std::string message = e.what();
            pg_guard([&] { ereport(WARNING, (errmsg("%s", message.c_str()))); });
            failing = true;
        }
        if (failing)
            continue;
        if (asked || GetCurrentTimestamp() >= next_last_used) {
            failing = !send_last_used();
            next_last_used = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), guc_last_used_interval_ms);
        }
        if (asked && !failing)
            pg_atomic_write_u64(&shared_state->last_used_written, requested);
    }
    disconnect();
}

} // namespace

// Connected to no database: visible in pg_stat_activity, reads no table.
void forwarder_register() { worker_register("flint_keys log forwarder", "flint_forwarder_main"); }

} // namespace flint::pg

extern "C" void flint_forwarder_main(Datum) {
    using namespace flint::pg;
    worker_run("flint_keys log forwarder", nullptr, &shared_state->forward.forwarder_latch,
               &shared_state->forward.forwarder_pid, forwarder_loop);
}
