#include "log_insert.hpp"

#include "error_boundary.hpp"
#include "log_record.hpp"

extern "C" {
#include "commands/copy.h"
#include "executor/spi.h"
#include "nodes/makefuncs.h"
#include "parser/parse_node.h"
#include "parser/parse_relation.h"
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
