#include "error_boundary.hpp"

namespace flint::pg {

namespace {
void copy_text(char *dst, size_t size, const char *src) { strlcpy(dst, src ? src : "", size); }
} // namespace

void capture_exception(PendingError &pending) noexcept {
    try {
        throw;
    } catch (const PgError &e) {
        pending.pg_error = e.edata();
    } catch (const FlintError &e) {
        pending.flint_error = true;
        copy_text(pending.sqlstate, sizeof pending.sqlstate, e.sqlstate());
        copy_text(pending.message, sizeof pending.message, e.what());
        copy_text(pending.detail, sizeof pending.detail, e.detail().c_str());
        copy_text(pending.hint, sizeof pending.hint, e.hint().c_str());
        pending.hide_statement = e.hide_statement();
    } catch (const std::bad_alloc &) {
        copy_text(pending.sqlstate, sizeof pending.sqlstate, "53200"); // out_of_memory
        copy_text(pending.message, sizeof pending.message, "flint_keys: out of memory");
    } catch (const std::exception &e) {
        copy_text(pending.sqlstate, sizeof pending.sqlstate, "XX000");
        copy_text(pending.message, sizeof pending.message, e.what());
    } catch (...) {
        copy_text(pending.sqlstate, sizeof pending.sqlstate, "XX000");
        copy_text(pending.message, sizeof pending.message, "flint_keys: unknown C++ exception");
    }
}

void raise_pending(const PendingError &pending) {
    if (pending.pg_error)
        ReThrowError(pending.pg_error);
    const char *s = pending.sqlstate[0] ? pending.sqlstate : "XX000";
    ereport(ERROR, (errcode(MAKE_SQLSTATE(s[0], s[1], s[2], s[3], s[4])), errmsg_internal("%s", pending.message),
                    pending.detail[0] ? errdetail_internal("%s", pending.detail) : 0,
                    pending.hint[0] ? errhint("%s", pending.hint) : 0, errhidestmt(pending.hide_statement)));
    pg_unreachable();
}

} // namespace flint::pg
