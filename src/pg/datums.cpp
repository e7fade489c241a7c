#include "datums.hpp"

extern "C" {
#include "utils/inet.h"
}

#include "error_boundary.hpp"

// Every helper here may run with C++ objects alive in its caller, so every
// Postgres call that can raise (allocation, detoasting) runs in pg_guard.
namespace flint::pg {

int64 interval_us(Datum d) {
    const Interval *iv = DatumGetIntervalP(d);
    return iv->time + (iv->day + int64{iv->month} * DAYS_PER_MONTH) * USECS_PER_DAY;
}

Datum uuid_datum(const Uuid &id) {
    Datum d = (Datum)0;
    pg_guard([&] {
        auto *out = static_cast<pg_uuid_t *>(palloc(sizeof(pg_uuid_t)));
        std::memcpy(out->data, id.data(), id.size());
        d = UUIDPGetDatum(out);
    });
    return d;
}

Datum uuid_array_datum(const Uuid *ids, int n) {
    ArrayType *array = nullptr;
    pg_guard([&] {
        Datum *elems = static_cast<Datum *>(palloc(sizeof(Datum) * std::max(n, 1)));
        for (int i = 0; i < n; ++i) {
            auto *out = static_cast<pg_uuid_t *>(palloc(sizeof(pg_uuid_t)));
            std::memcpy(out->data, ids[i].data(), ids[i].size());
            elems[i] = UUIDPGetDatum(out);
        }
        array = construct_array(elems, n, UUIDOID, 16, false, TYPALIGN_CHAR);
    });
    return PointerGetDatum(array);
}

Datum text_datum(std::string_view s) {
    Datum d = (Datum)0;
    pg_guard([&] { d = PointerGetDatum(cstring_to_text_with_len(s.data(), static_cast<int>(s.size()))); });
    return d;
}

Datum text_array_datum(const std::vector<std::string> &items) {
    ArrayType *array = nullptr;
    std::vector<Datum> elems(items.size());
    pg_guard([&] {
        for (size_t i = 0; i < items.size(); ++i)
            elems[i] = PointerGetDatum(cstring_to_text_with_len(items[i].data(), static_cast<int>(items[i].size())));
        array = construct_array(elems.data(), static_cast<int>(elems.size()), TEXTOID, -1, false, TYPALIGN_INT);
    });
    return PointerGetDatum(array);
}

Datum composite_result(FunctionCallInfo fcinfo, Datum *values, bool *nulls) {
    TupleDesc desc;
    HeapTuple tuple = nullptr;
    pg_guard([&] {
        if (get_call_result_type(fcinfo, nullptr, &desc) != TYPEFUNC_COMPOSITE)
            elog(ERROR, "flint_keys: function must return a composite type");
        tuple = heap_form_tuple(BlessTupleDesc(desc), values, nulls);
    });
    return HeapTupleGetDatum(tuple);
}

std::optional<std::string_view> text_arg(FunctionCallInfo fcinfo, int n) {
    if (PG_NARGS() <= n || PG_ARGISNULL(n))
        return std::nullopt;
    text *t = nullptr;
    pg_guard([&] { t = PG_GETARG_TEXT_PP(n); }); // detoasting may raise
    return std::string_view(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

std::optional<IpAddress> inet_arg(FunctionCallInfo fcinfo, int n) {
    if (PG_NARGS() <= n || PG_ARGISNULL(n))
        return std::nullopt;
    inet *ip = nullptr;
    pg_guard([&] { ip = PG_GETARG_INET_PP(n); }); // detoasting may raise
    IpAddress out;
    out.family = ip_family(ip) == PGSQL_AF_INET ? 4 : 6;
    std::memcpy(out.bytes, ip_addr(ip), out.family == 4 ? 4 : 16);
    return out;
}

std::optional<Uuid> uuid_arg(FunctionCallInfo fcinfo, int n) {
    if (PG_NARGS() <= n || PG_ARGISNULL(n))
        return std::nullopt;
    Uuid id; // a uuid is passed by reference, never toasted: PG_GETARG_UUID_P cannot raise
    std::memcpy(id.data(), PG_GETARG_UUID_P(n)->data, id.size());
    return id;
}

} // namespace flint::pg
