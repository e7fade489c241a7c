// A standby's durable log spool: one file per batch in flint_keys_spool/
// under the data directory, written by the log worker and removed by the
// forwarder once the primary has the batch (or by the worker itself, after
// promotion, once it has inserted it). Plain POSIX file calls: nothing here
// raises a Postgres error; failures come back as FlintError.
//
// A batch file appears whole or not at all (written to a temporary name,
// fsynced, renamed, the directory fsynced), so a crash leaves either the
// complete batch or nothing; every read checks the CRC before use.
#pragma once
#include "pg_includes.hpp"

#include "spool_batch.hpp"

namespace flint::pg {

inline constexpr const char *kSpoolDir = "flint_keys_spool";

// The batches in the spool, oldest first (by file sequence).
std::vector<uint64_t> spool_sequences();
// Durably adds a batch; throws FlintError on an I/O error before the
// rename (nothing is left behind). Once renamed the batch counts as spooled:
// a failed directory fsync is retried by the next batch's.
void spool_write(uint64_t sequence, const std::string &bytes);
// The file's bytes; false when it is gone.
bool spool_read(uint64_t sequence, std::string *bytes);
// Durably removes a batch the primary has; also keeps the spool's accounting.
void spool_remove(uint64_t sequence, uint64_t bytes, uint64_t rows);
// Reads and checks a batch: false when it is gone, or damaged (then it is
// set aside with a WARNING and never sent). Throws FlintError on an I/O error.
bool spool_load(uint64_t sequence, std::string *bytes, SpoolBatch *batch);
// Moves a damaged batch out of the way (kept for inspection, never sent);
// `bytes` and `rows` leave the spool's accounting.
void spool_set_aside(uint64_t sequence, uint64_t bytes, uint64_t rows);
// At the worker's start: counts what the spool holds, then lets the forwarder begin.
void spool_account_at_start();
// Counts the spool's files again (the worker, with no batch being written):
// a batch set aside whose header was unreadable, or that was cut short,
// left its rows and bytes in the accounting. Clears ForwardState::recount.
void spool_recount();

// Rows the spool can still take under flint.log_spool_size.
size_t spool_room_rows();

} // namespace flint::pg
