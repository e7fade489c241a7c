// What the extension's two background workers (the log worker and the
// forwarder) share as processes: SIGTERM asks for a clean stop, SIGHUP for a
// reload, and each publishes its latch and pid in shared memory (cleared
// when it exits) so that backends can wake it.
#pragma once
#include "pg_includes.hpp"

namespace flint::pg {

// Set by SIGTERM: finish the current step and stop.
extern volatile sig_atomic_t worker_stop_requested;

// Installs the signal handlers and unblocks signals (before connecting).
void worker_signals_init();

// Publishes this process's latch and pid in the given shared slots.
void worker_publish(Latch *volatile *latch_slot, volatile pid_t *pid_slot);

} // namespace flint::pg
