// flint_guard_write(): the row trigger flint_protect_table() installs. Before
// each write by a role subject to row-level security it raises the flint
// codes (missing_scope, wrong_merchant) instead of a generic RLS violation,
// and logs every guarded write, allowed or refused.
#include "auth_context.hpp"
#include "context_checks.hpp"
#include "error_boundary.hpp"
#include "request_log.hpp"
#include "scopes.hpp"

extern "C" {
#include "executor/spi.h"
#include "utils/rls.h"
}

namespace flint::pg {

namespace {

// The merchant column of a row the write touches.
RowMerchant merchant_of(HeapTuple tuple, TupleDesc desc, int attnum) {
    RowMerchant m;
    m.touched = true;
    bool isnull = true;
    Datum d = (Datum)0;
    pg_guard([&] { d = heap_getattr(tuple, attnum, desc, &isnull); });
    if (!isnull) {
        m.present = true;
        std::memcpy(m.id.data(), DatumGetUUIDP(d)->data, m.id.size());
    }
    return m;
}

Datum guard_write_body(FunctionCallInfo fcinfo) {
    if (!CALLED_AS_TRIGGER(fcinfo))
        throw FlintError("39P01", "flint_guard_write() may only be called as a trigger");
    auto *trig = reinterpret_cast<TriggerData *>(fcinfo->context);
    if (!TRIGGER_FIRED_BEFORE(trig->tg_event) || !TRIGGER_FIRED_FOR_ROW(trig->tg_event) ||
        trig->tg_trigger->tgnargs != 2)
        throw FlintError("39P01", "flint_guard_write() must be a BEFORE ROW trigger with two arguments");
    const char *column = trig->tg_trigger->tgargs[0];
    std::string write_scope = trig->tg_trigger->tgargs[1];
    HeapTuple result = TRIGGER_FIRED_BY_UPDATE(trig->tg_event) ? trig->tg_newtuple : trig->tg_trigtuple;

    // Roles that bypass RLS (the table owner, BYPASSRLS, superusers) are not guarded.
    int rls = RLS_NONE;
    pg_guard([&] { rls = check_enable_rls(RelationGetRelid(trig->tg_relation), InvalidOid, false); });
    if (rls != RLS_ENABLED)
        return PointerGetDatum(result);

    TupleDesc desc = RelationGetDescr(trig->tg_relation);
    int attnum = 0;
    pg_guard([&] { attnum = SPI_fnumber(desc, column); });
    if (attnum <= 0)
        throw FlintError("42703", std::string("flint_guard_write: column \"") + column + "\" does not exist");

    // The rows the write touches: the old one (UPDATE, DELETE) and the new one (INSERT, UPDATE).
    RowMerchant old_row, new_row;
    if (TRIGGER_FIRED_BY_INSERT(trig->tg_event)) {
        new_row = merchant_of(trig->tg_trigtuple, desc, attnum);
    } else {
        old_row = merchant_of(trig->tg_trigtuple, desc, attnum);
        if (TRIGGER_FIRED_BY_UPDATE(trig->tg_event))
            new_row = merchant_of(trig->tg_newtuple, desc, attnum);
    }

    const AuthContext *ctx = current_auth();
    CheckResult check;
    check.code = recheck_auth(); // a context whose key died fails with the key's code
    if (check.code != Code::ok) {
        check.message = key_failure_message(check.code, shown_prefix(ctx->display_prefix));
    } else {
        ContextView view;
        if (ctx)
            view = {ctx->display_prefix, ctx->mode, ctx->merchant_id, &ctx->scopes};
        check = check_guarded_write(ctx ? &view : nullptr, write_scope, RelationGetRelationName(trig->tg_relation),
                                    old_row, new_row);
    }
    Code code = check.code;

    LogRecord rec = context_log_record(LogSource::guarded_write, code);
    const RowMerchant &target = new_row.present ? new_row : old_row;
    if (target.present) {
        rec.has_requested_merchant = true;
        rec.requested_merchant = target.id;
    }
    log_scope(rec, write_scope);
    emit_log_record(rec);

    if (code != Code::ok)
        throw FlintError(code_sqlstate(code), check.message, "", check.hint);
    return PointerGetDatum(result);
}

} // namespace
} // namespace flint::pg

using namespace flint::pg;
FLINT_SQL_FUNCTION(flint_guard_write, guard_write_body)
