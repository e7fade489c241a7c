#include "worker_process.hpp"

#include "error_boundary.hpp"

extern "C" {
#include "postmaster/interrupt.h"
}

namespace flint::pg {

volatile sig_atomic_t worker_stop_requested = false;

namespace {

Latch *volatile *published_latch = nullptr;
const char *flint_database_for_context = "";
volatile pid_t *published_pid = nullptr;

void handle_sigterm(SIGNAL_ARGS) {
    int save_errno = errno;
    worker_stop_requested = true;
    SetLatch(MyLatch);
    errno = save_errno;
}

// A worker whose flint.database does not exist fails at connect with
// "database ... does not exist" every restart (1 s); say what to do (a
// callback may add the hint: it runs before the error is reported).
void connect_context(void *arg) {
    errcontext("%s connecting to flint.database \"%s\"", static_cast<const char *>(arg), flint_database_for_context);
    if (geterrcode() == ERRCODE_UNDEFINED_DATABASE)
        errhint("Create database \"%s\" (and CREATE EXTENSION flint_keys in it), or set flint.database in "
                "postgresql.conf to the database that uses flint_keys and restart.",
                flint_database_for_context);
}

void unpublish(int, Datum) {
    if (published_latch)
        *published_latch = nullptr;
    if (published_pid)
        *published_pid = 0;
}

} // namespace

void worker_register(const char *name, const char *function) {
    BackgroundWorker worker;
    std::memset(&worker, 0, sizeof worker);
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    worker.bgw_start_time = BgWorkerStart_ConsistentState;
    worker.bgw_restart_time = 1; // seconds; also the retry while flint.database does not exist yet
    strlcpy(worker.bgw_library_name, "flint_keys", BGW_MAXLEN);
    strlcpy(worker.bgw_function_name, function, BGW_MAXLEN);
    strlcpy(worker.bgw_name, name, BGW_MAXLEN);
    strlcpy(worker.bgw_type, name, BGW_MAXLEN);
    RegisterBackgroundWorker(&worker);
}

void worker_run(const char *name, const char *database, Latch *volatile *latch_slot, volatile pid_t *pid_slot,
                void (*loop)()) {
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, handle_sigterm);
    BackgroundWorkerUnblockSignals();
    flint_database_for_context = database ? database : "";
    ErrorContextCallback connecting{error_context_stack, connect_context, const_cast<char *>(name)};
    if (database)
        error_context_stack = &connecting;
    BackgroundWorkerInitializeConnection(database, nullptr, 0);
    error_context_stack = connecting.previous;
    published_latch = latch_slot;
    published_pid = pid_slot;
    *pid_slot = MyProcPid;
    *latch_slot = &MyProc->procLatch;
    before_shmem_exit(unpublish, 0);
    pgstat_report_appname(name);
    call_cpp([loop] {
        loop();
        return (Datum)0;
    });
    // Exit 1: started again (after bgw_restart_time) when a superuser's
    // pg_terminate_backend stopped it, say a sweep of a database's sessions;
    // exit 0 would unregister the worker and, its queue full, every
    // verification would be refused. At a shutdown nothing is restarted.
    proc_exit(1);
}

} // namespace flint::pg
