// The request-log background worker (log_worker.cpp): drains the shared
// queue into flint.request_log, keeps last_used_at and the partitions, and
// leases quota units.
#pragma once
#include "pg_includes.hpp"

namespace flint::pg {

// _PG_init (while preloading): registers the worker with the postmaster.
void log_worker_register();

} // namespace flint::pg
