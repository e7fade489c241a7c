// The one C++/Postgres error boundary of flint_keys (README.md, "Layout, build and tests").
//
// Postgres errors are longjmps that skip C++ destructors; C++ exceptions that
// reach Postgres abort the backend. So:
//  - C++ calls into Postgres code that may raise go through pg_guard(), which
//    turns the Postgres error into a PgError exception carrying all of it;
//  - every SQL-callable entry point runs its C++ body through call_cpp(), which
//    catches everything and raises only after the try block has ended, when no
//    C++ object is alive: PgError is re-thrown as it was (SQLSTATE included),
//    FlintError becomes an ereport with its own SQLSTATE.
// Functions that may ereport and must only run inside pg_guard end in _unsafe.
#pragma once
#include "pg_includes.hpp"

namespace flint::pg {

class PgError : public std::exception {
  public:
    explicit PgError(ErrorData *edata) : edata_(edata) {}
    ErrorData *edata() const { return edata_; }
    const char *what() const noexcept override { return edata_->message ? edata_->message : "error"; }

  private:
    ErrorData *edata_; // palloc'd in the memory context current at the guard
};

// One of our own errors. `sqlstate` is five characters, e.g. "FK005".
class FlintError : public std::exception {
  public:
    FlintError(const char *sqlstate, std::string message, std::string detail = {}, std::string hint = {},
               bool hide_statement = false)
        : message_(std::move(message)), detail_(std::move(detail)), hint_(std::move(hint)),
          hide_statement_(hide_statement) {
        std::memcpy(sqlstate_, sqlstate, 5);
        sqlstate_[5] = '\0';
    }
    const char *what() const noexcept override { return message_.c_str(); }
    const char *sqlstate() const { return sqlstate_; }
    const std::string &detail() const { return detail_; }
    const std::string &hint() const { return hint_; }
    bool hide_statement() const { return hide_statement_; }

  private:
    char sqlstate_[6];
    std::string message_, detail_, hint_;
    bool hide_statement_;
};

// Runs fn (Postgres calls only; no live C++ objects with destructors inside)
// and converts a Postgres error into PgError. Never swallows an error: the
// caller re-raises it, so the transaction still aborts and releases resources.
template <class Fn> void pg_guard(Fn &&fn) {
    MemoryContext caller_context = CurrentMemoryContext;
    ErrorData *volatile edata = nullptr;
    PG_TRY();
    { fn(); }
    PG_CATCH();
    {
        MemoryContextSwitchTo(caller_context);
        edata = CopyErrorData();
        FlushErrorState();
    }
    PG_END_TRY();
    if (edata)
        throw PgError(edata);
}

// What call_cpp raises, copied out of the exception into plain storage so
// nothing with a destructor is alive when ereport longjmps.
struct PendingError {
    ErrorData *pg_error = nullptr;
    bool flint_error = false;
    char sqlstate[6] = {};
    bool hide_statement = false;
    char message[1024] = {};
    char detail[1024] = {};
    char hint[512] = {};
};

void capture_exception(PendingError &pending) noexcept;
[[noreturn]] void raise_pending(const PendingError &pending);

// The body of every SQL entry point.
template <class Fn> Datum call_cpp(Fn &&body) {
    PendingError pending;
    Datum result = (Datum)0;
    bool failed = false;
    try {
        result = body();
    } catch (...) {
        capture_exception(pending);
        failed = true;
    }
    if (failed)
        raise_pending(pending);
    return result;
}

} // namespace flint::pg

// Declares an SQL-callable function whose C++ body is `body_name(fcinfo)`.
#define FLINT_SQL_FUNCTION(sql_name, body_name)                                                                        \
    extern "C" {                                                                                                       \
    PG_FUNCTION_INFO_V1(sql_name);                                                                                     \
    PGDLLEXPORT Datum sql_name(PG_FUNCTION_ARGS) {                                                                     \
        return flint::pg::call_cpp([&]() -> Datum { return body_name(fcinfo); });                                      \
    }                                                                                                                  \
    }
