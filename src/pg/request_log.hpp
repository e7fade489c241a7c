// The verification path's one seam into the request log: fill a LogRecord and
// hand it to emit_log_record. Rows go through the shared-memory queue to the
// log worker (log_worker.cpp), so they survive the caller's rollback.
#pragma once
#include "pg_includes.hpp"

#include "limits.hpp"
#include "log_record.hpp"

namespace flint::pg {

// Fills the per-backend fields (pid, client address, application_name,
// flint.request_id) and queues the record; `at` is the caller's, the time
// its decision was made. When the queue
// stays full for flint.log_queue_wait, throws FlintError log_queue_full:
// the caller fails closed rather than verify without a log row.
void emit_log_record(LogRecord &record);

// A record, stamped now, for a check made on the transaction's auth context
// (if any): the context's key, merchant and display prefix filled in.
LogRecord context_log_record(LogSource source, Code outcome);

// Sets the log worker's latch (it also serves quota leases).
void wake_log_worker();

// Waits until every record queued so far is in flint.request_log and
// last_used_at is written from them.
void flush_log();

} // namespace flint::pg
