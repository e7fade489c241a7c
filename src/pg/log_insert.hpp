// Inserting rows into flint.request_log with a binary COPY from memory: the
// log worker's batches, a standby's forwarded batches
// (flint._receive_log_batch, on the primary) and, after a promotion, the
// batches still in the spool. Every function here may raise: call them
// inside pg_guard, in a transaction.
#pragma once
#include "pg_includes.hpp"

#include "log_record.hpp"
#include "token.hpp"
#include "usage_rollup.hpp"

namespace flint::pg {

// flint.request_log as it is now (relid invalid when it does not exist): a
// 1.1 table has neither cost nor server.
struct LogTable {
    Oid relid = InvalidOid;
    bool has_cost = false;
    bool has_server = false;
    bool has_usage = false; // flint.usage (1.3): rollups written with the rows
};
LogTable log_table_unsafe();

// Binary COPY of `data` (encode_copy_binary's columns, as `table` has them)
// into flint.request_log; returns the rows inserted. The sums of its rows
// before the usage mark (late rows) go into flint.usage in the same
// transaction (one upsert per minute, merchant, key and outcome). The log
// worker passes mark_out for its own batches (set to the mark, when
// flint.usage exists) and tallies the rest itself; without it, the newest
// `at` of the rest is noted (untallied_until), for the worker to read them
// from the table.
uint64 copy_into_log_unsafe(const LogTable &table, const char *data, size_t len, int64 *mark_out);

// The log worker's own batches without COPY: the rows go straight to each
// day partition's heap (multi-insert, as COPY does inside), then into each
// index in that index's key order, so that consecutive entries share leaf
// pages (and a merchant's rows take the rightmost-leaf fast path); the late
// rows' usage as copy_into_log_unsafe adds it. `server` names the server in
// the rows (NULL: none); *mark_out as copy_into_log_unsafe sets it. Returns
// false, inserting nothing, when the table is not the shape it knows (a
// column, trigger, CHECK, unique index or sub-partitioning a DBA added, a row
// with no partition): the caller uses COPY.
bool insert_rows_direct_unsafe(const LogTable &table, const LogRecord *rows, size_t n, const char *server,
                               int64 *mark_out);

// One upsert of the groups into flint.usage.
void add_usage_unsafe(const UsageRollup &rollup);

// A standby's batch, exactly once: the primary remembers the highest batch id
// of each origin (flint.log_origins) in the same transaction as the rows.
// Returns false, inserting nothing, when that batch is already there.
bool receive_batch_unsafe(const Uuid &origin, int64 batch_id, const char *server, const char *data, size_t len,
                          uint64 *rows);

} // namespace flint::pg
