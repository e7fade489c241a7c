#include "log_insert.hpp"

#include "error_boundary.hpp"
#include "log_record.hpp"
#include "usage_rollup.hpp"

extern "C" {
#include "commands/copy.h"
#include "executor/spi.h"
#include "nodes/makefuncs.h"
#include "parser/parse_node.h"
#include "parser/parse_relation.h"
#include "utils/array.h"
}

namespace flint::pg {

namespace {

// The batch, read by COPY FROM through this callback.
struct CopySource {
    const char *data;
    size_t len;
    size_t pos;
};
CopySource copy_source;

int read_copy_source(void *outbuf, int, int maxread) {
    size_t n = std::min(static_cast<size_t>(maxread), copy_source.len - copy_source.pos);
    std::memcpy(outbuf, copy_source.data + copy_source.pos, n);
    copy_source.pos += n;
    return static_cast<int>(n);
}

// Claims (origin, batch_id): a row comes back only if the batch is new.
constexpr const char *kClaimSql =
    "INSERT INTO flint.log_origins AS o (origin, server, last_batch, rows_received, first_at, last_at) "
    "VALUES ($1, $2, $3, 0, now(), now()) "
    "ON CONFLICT (origin) DO UPDATE SET last_batch = EXCLUDED.last_batch, last_at = now() "
    "WHERE o.last_batch < EXCLUDED.last_batch RETURNING 1";
constexpr const char *kCountSql = "UPDATE flint.log_origins SET rows_received = rows_received + $2 WHERE origin = $1";

// One statement per batch: each group of the batch adds to its row.
constexpr const char *kUsageSql =
    "INSERT INTO flint.usage AS u (minute, merchant_id, key_id, outcome, requests, cost) "
    "SELECT * FROM unnest($1::timestamptz[], $2::uuid[], $3::uuid[], $4::text[], $5::int8[], $6::int8[]) "
    "ON CONFLICT (minute, merchant_id, key_id, outcome) "
    "DO UPDATE SET requests = u.requests + EXCLUDED.requests, cost = u.cost + EXCLUDED.cost";

Datum uuid_datum(const Uuid &id) {
    auto *u = static_cast<pg_uuid_t *>(palloc(sizeof(pg_uuid_t)));
    std::memcpy(u->data, id.data(), 16);
    return UUIDPGetDatum(u);
}

Datum array_datum(std::vector<Datum> &values, const bool *nulls, Oid type, int16 len, bool byval, char align) {
    int dims[1] = {static_cast<int>(values.size())}, lbs[1] = {1};
    return PointerGetDatum(
        construct_md_array(values.data(), const_cast<bool *>(nulls), 1, dims, lbs, type, len, byval, align));
}

// flint.usage_watermark, locked FOR SHARE until the transaction ends.
int64 usage_watermark_unsafe() {
    SPI_connect();
    if (SPI_execute("SELECT rolled_up_to FROM flint.usage_watermark FOR SHARE", false, 1) != SPI_OK_SELECT)
        elog(ERROR, "flint_keys: could not read flint.usage_watermark");
    int64 mark = PG_INT64_MIN; // no row: nothing is rolled up yet
    if (SPI_processed == 1) {
        bool isnull;
        Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
        if (!isnull)
            mark = DatumGetTimestampTz(d);
    }
    SPI_finish();
    return mark;
}

void add_usage_unsafe(const UsageRollup &rollup) {
    const std::vector<UsageGroup> groups = rollup.groups();
    if (groups.empty())
        return;
    const size_t n = groups.size();
    std::vector<Datum> minutes(n), merchants(n), keys(n), outcomes(n), requests(n), costs(n);
    // palloc0: all false (not NULL); freed with the transaction's memory.
    bool *no_nulls = static_cast<bool *>(palloc0(n)), *merchant_nulls = static_cast<bool *>(palloc0(n)),
         *key_nulls = static_cast<bool *>(palloc0(n));
    for (size_t i = 0; i < n; ++i) {
        const UsageGroup &g = groups[i];
        minutes[i] = TimestampTzGetDatum(g.minute);
        merchant_nulls[i] = !g.has_merchant;
        merchants[i] = g.has_merchant ? uuid_datum(g.merchant) : Datum(0);
        key_nulls[i] = !g.has_key;
        keys[i] = g.has_key ? uuid_datum(g.key) : Datum(0);
        outcomes[i] = PointerGetDatum(cstring_to_text_with_len(g.outcome.data(), static_cast<int>(g.outcome.size())));
        requests[i] = Int64GetDatum(g.requests);
        costs[i] = Int64GetDatum(g.cost);
    }
    Oid types[6] = {TIMESTAMPTZARRAYOID, UUIDARRAYOID, UUIDARRAYOID, TEXTARRAYOID, INT8ARRAYOID, INT8ARRAYOID};
    Datum args[6] = {
        array_datum(minutes, no_nulls, TIMESTAMPTZOID, 8, true, TYPALIGN_DOUBLE),
        array_datum(merchants, merchant_nulls, UUIDOID, 16, false, TYPALIGN_CHAR),
        array_datum(keys, key_nulls, UUIDOID, 16, false, TYPALIGN_CHAR),
        array_datum(outcomes, no_nulls, TEXTOID, -1, false, TYPALIGN_INT),
        array_datum(requests, no_nulls, INT8OID, 8, true, TYPALIGN_DOUBLE),
        array_datum(costs, no_nulls, INT8OID, 8, true, TYPALIGN_DOUBLE),
    };
    SPI_connect();
    if (SPI_execute_with_args(kUsageSql, 6, types, args, nullptr, false, 0) != SPI_OK_INSERT)
        elog(ERROR, "flint_keys: could not add to flint.usage");
    SPI_finish();
}

} // namespace

LogTable log_table_unsafe() {
    LogTable t;
    Oid nsp = get_namespace_oid("flint", true);
    if (!OidIsValid(nsp))
        return t;
    t.relid = get_relname_relid("request_log", nsp);
    if (OidIsValid(t.relid)) {
        t.has_cost = get_attnum(t.relid, "cost") != InvalidAttrNumber;
        t.has_server = get_attnum(t.relid, kServerColumn) != InvalidAttrNumber;
    }
    t.has_usage = OidIsValid(get_relname_relid("usage", nsp)) && OidIsValid(get_relname_relid("usage_watermark", nsp));
    return t;
}

uint64 copy_into_log_unsafe(const LogTable &table, const char *data, size_t len) {
    Relation rel = table_open(table.relid, RowExclusiveLock);
    ParseState *pstate = make_parsestate(nullptr);
    // CopyFrom finds its target as range-table entry 1, as DoCopy sets it up.
    ParseNamespaceItem *nsitem = addRangeTableEntryForRelation(pstate, rel, RowExclusiveLock, nullptr, false, false);
    nsitem->p_rte->requiredPerms = ACL_INSERT;
    List *options = list_make1(makeDefElem(pstrdup("format"), (Node *)makeString(pstrdup("binary")), -1));
    copy_source = {data, len, 0};
    List *columns = NIL;
    for (const char *name : kCopyColumns)
        if (table.has_cost || std::strcmp(name, "cost") != 0)
            columns = lappend(columns, makeString(pstrdup(name)));
    if (table.has_server)
        columns = lappend(columns, makeString(pstrdup(kServerColumn)));
    CopyFromState cstate = BeginCopyFrom(pstate, rel, nullptr, nullptr, false, read_copy_source, columns, options);
    uint64 rows = CopyFrom(cstate);
    EndCopyFrom(cstate);
    table_close(rel, NoLock);
    if (table.has_usage) {
        // Rows for a time the worker has already rolled up (late: forwarded,
        // spooled, held up) add their groups now; the rest wait for the
        // minute's roll-up. The mark's row lock orders this against it.
        UsageRollup rollup;
        if (!rollup.add_copy_binary(std::string_view(data, len), table.has_cost, usage_watermark_unsafe()))
            elog(ERROR, "flint_keys: a request-log batch COPY took could not be summed for flint.usage");
        add_usage_unsafe(rollup);
    }
    return rows;
}

bool receive_batch_unsafe(const Uuid &origin, int64 batch_id, const char *server, const char *data, size_t len,
                          uint64 *rows) {
    *rows = 0;
    LogTable table = log_table_unsafe();
    if (!OidIsValid(table.relid) || !table.has_server || !table.has_cost)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("flint_keys: flint.request_log cannot take forwarded rows"),
                        errhint("ALTER EXTENSION flint_keys UPDATE on the primary.")));
    SPI_connect();
    Oid types[3] = {UUIDOID, TEXTOID, INT8OID};
    auto *origin_uuid = static_cast<pg_uuid_t *>(palloc(sizeof(pg_uuid_t)));
    std::memcpy(origin_uuid->data, origin.data(), 16);
    Datum args[3] = {UUIDPGetDatum(origin_uuid), CStringGetTextDatum(server), Int64GetDatum(batch_id)};
    if (SPI_execute_with_args(kClaimSql, 3, types, args, nullptr, false, 0) != SPI_OK_INSERT_RETURNING)
        elog(ERROR, "flint_keys: could not claim a forwarded batch");
    bool fresh = SPI_processed == 1;
    if (fresh) {
        *rows = copy_into_log_unsafe(table, data, len);
        Oid ctypes[2] = {UUIDOID, INT8OID};
        Datum cargs[2] = {args[0], Int64GetDatum(static_cast<int64>(*rows))};
        if (SPI_execute_with_args(kCountSql, 2, ctypes, cargs, nullptr, false, 0) != SPI_OK_UPDATE)
            elog(ERROR, "flint_keys: could not count a forwarded batch");
    }
    SPI_finish();
    return fresh;
}

namespace {

// flint._receive_log_batch(origin uuid, batch_id bigint, server text, rows bytea):
// called by a standby's forwarder on the primary; the rows inserted, 0 for a
// batch the primary already has.
Datum receive_log_batch_body(FunctionCallInfo fcinfo) {
    uint64 rows = 0;
    pg_guard([&] {
        if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
            ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("flint_keys: no argument may be NULL")));
        Uuid origin;
        std::memcpy(origin.data(), PG_GETARG_UUID_P(0)->data, 16);
        bytea *batch = PG_GETARG_BYTEA_PP(3);
        (void)receive_batch_unsafe(origin, PG_GETARG_INT64(1), text_to_cstring(PG_GETARG_TEXT_PP(2)),
                                   VARDATA_ANY(batch), VARSIZE_ANY_EXHDR(batch), &rows);
    });
    PG_RETURN_INT64(static_cast<int64>(rows));
}

} // namespace
} // namespace flint::pg

using namespace flint::pg;
FLINT_SQL_FUNCTION(flint_receive_log_batch, receive_log_batch_body)
