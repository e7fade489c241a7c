// Inserting rows into flint.request_log with a binary COPY from memory: the
// log worker's batches, a standby's forwarded batches
// (flint._receive_log_batch, on the primary) and, after a promotion, the
// batches still in the spool. Every function here may raise: call them
// inside pg_guard, in a transaction.
#pragma once
#include "pg_includes.hpp"

#include "log_record.hpp"
#include "token.hpp"

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
// into flint.request_log, and the rows' sums into flint.usage in the same
// transaction (one upsert per minute, merchant, key and outcome); returns
// the rows inserted.
uint64 copy_into_log_unsafe(const LogTable &table, const char *data, size_t len);

// The log worker's own batches without COPY: the rows go straight to each
// day partition's heap (multi-insert, as COPY does inside), then into each
// index in that index's key order, so that consecutive entries share leaf
// pages (and a merchant's rows take the rightmost-leaf fast path); the late
// rows' usage as copy_into_log_unsafe adds it. `server` names the server in
// the rows (NULL: none). Returns false, inserting nothing, when the table is
// not the shape it knows (a column, trigger, CHECK, unique index or sub-
// partitioning a DBA added, a row with no partition): the caller uses COPY.
bool insert_rows_direct_unsafe(const LogTable &table, const LogRecord *rows, size_t n, const char *server);

// A standby's batch, exactly once: the primary remembers the highest batch id
// of each origin (flint.log_origins) in the same transaction as the rows.
// Returns false, inserting nothing, when that batch is already there.
bool receive_batch_unsafe(const Uuid &origin, int64 batch_id, const char *server, const char *data, size_t len,
                          uint64 *rows);

} // namespace flint::pg
