// Converting between our C++ values and Postgres Datums, in one place.
#pragma once
#include "pg_includes.hpp"

#include "limits.hpp"
#include "token.hpp"

namespace flint::pg {

// A palloc'd uuid. Only palloc: safe inside pg_guard, no C++ objects.
Datum uuid_datum(const Uuid &id);
// An interval in microseconds (a month is 30 days, as PostgreSQL counts it).
int64 interval_us(Datum d);
// uuid[] of `n` ids.
Datum uuid_array_datum(const Uuid *ids, int n);

// A text datum of the string.
Datum text_datum(std::string_view s);

// A text[] of the strings.
Datum text_array_datum(const std::vector<std::string> &items);

// values/nulls as the row type the SQL declaration gives the function.
Datum composite_result(FunctionCallInfo fcinfo, Datum *values, bool *nulls);

// The n-th argument, or nullopt when it is NULL or absent.
std::optional<std::string_view> text_arg(FunctionCallInfo fcinfo, int n);
std::optional<Uuid> uuid_arg(FunctionCallInfo fcinfo, int n);
std::optional<IpAddress> inet_arg(FunctionCallInfo fcinfo, int n);

} // namespace flint::pg
