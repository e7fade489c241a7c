// What the extension's two background workers (the log worker and the
// forwarder) share as processes: SIGTERM asks for a clean stop, SIGHUP for a
// reload, and each publishes its latch and pid in shared memory (cleared
// when it exits) so that backends can wake it.
#pragma once
#include "pg_includes.hpp"

namespace flint::pg {

// Registers one of them (while preloading): connected (to a database, or
// to none), started once the server is consistent (a hot standby runs them
// too), restarted 5 s after a crash. `name` is also its backend_type.
void worker_register(const char *name, const char *function);

// Set by SIGTERM: finish the current step and stop.
extern volatile sig_atomic_t worker_stop_requested;

// A worker's whole life: signals, the connection (to `database`, or to none
// when nullptr), its latch and pid published in the given shared slots (and
// cleared at exit), then `loop` through the one error boundary (anything
// escaping it is a bug: the worker exits and the postmaster restarts it).
void worker_run(const char *name, const char *database, Latch *volatile *latch_slot, volatile pid_t *pid_slot,
                void (*loop)());

} // namespace flint::pg
