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

// Installs the signal handlers and unblocks signals (before connecting).
void worker_signals_init();

// Publishes this process's latch and pid in the given shared slots.
void worker_publish(Latch *volatile *latch_slot, volatile pid_t *pid_slot);

} // namespace flint::pg
