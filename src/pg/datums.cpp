#include "datums.hpp"

extern "C" {
#include "utils/inet.h"
}

#include "error_boundary.hpp"

namespace flint::pg {

Datum uuid_datum(const Uuid &id) {
    auto *out = static_cast<pg_uuid_t *>(palloc(sizeof(pg_uuid_t)));
    std::memcpy(out->data, id.data(), id.size());
    return UUIDPGetDatum(out);
}

Datum text_array_datum(const std::vector<std::string> &items) {
    ArrayType *array = nullptr;
    std::vector<Datum> elems;
    for (const std::string &s : items)
        elems.push_back(PointerGetDatum(cstring_to_text_with_len(s.data(), static_cast<int>(s.size()))));
    pg_guard([&] {
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
    text *t = PG_GETARG_TEXT_PP(n);
    return std::string_view(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

std::optional<IpAddress> inet_arg(FunctionCallInfo fcinfo, int n) {
    if (PG_NARGS() <= n || PG_ARGISNULL(n))
        return std::nullopt;
    // Detoasting may raise (out of memory) only before the IpAddress exists.
    inet *ip = PG_GETARG_INET_PP(n);
    IpAddress out;
    out.family = ip_family(ip) == PGSQL_AF_INET ? 4 : 6;
    std::memcpy(out.bytes, ip_addr(ip), out.family == 4 ? 4 : 16);
    return out;
}

std::optional<Uuid> uuid_arg(FunctionCallInfo fcinfo, int n) {
    if (PG_NARGS() <= n || PG_ARGISNULL(n))
        return std::nullopt;
    Uuid id;
    std::memcpy(id.data(), PG_GETARG_UUID_P(n)->data, id.size());
    return id;
}

} // namespace flint::pg
