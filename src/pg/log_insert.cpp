#include "log_insert.hpp"

#include "error_boundary.hpp"
#include "log_record.hpp"
#include "state.hpp"
#include "usage_rollup.hpp"

extern "C" {
#include "access/heapam.h"
#include "access/tableam.h"
#include "catalog/index.h"
#include "catalog/pg_am.h"
#include "commands/copy.h"
#include "executor/executor.h"
#include "partitioning/partbounds.h"
#include "partitioning/partdesc.h"
#include "utils/inet.h"
#include "utils/partcache.h"
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

} // namespace

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

namespace {

// Rows at or after the mark that the worker's tally does not hold: the
// worker's next roll-up steps read them from the table.
void note_untallied(int64 latest) {
    if (!shared_state || latest == PG_INT64_MIN)
        return;
    uint64 seen = pg_atomic_read_u64(&shared_state->untallied_until);
    while (static_cast<int64>(seen) < latest &&
           !pg_atomic_compare_exchange_u64(&shared_state->untallied_until, &seen, static_cast<uint64>(latest))) {
    }
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

uint64 copy_into_log_unsafe(const LogTable &table, const char *data, size_t len, int64 *mark_out) {
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
        // The rest: the worker's tally holds its own batches (mark_out); others are noted.
        UsageRollup rollup;
        const int64 mark = usage_watermark_unsafe();
        int64 latest = PG_INT64_MIN;
        if (!rollup.add_copy_binary(std::string_view(data, len), table.has_cost, mark, &latest))
            elog(ERROR, "flint_keys: a request-log batch COPY took could not be summed for flint.usage");
        add_usage_unsafe(rollup);
        if (mark_out)
            *mark_out = mark;
        else
            note_untallied(latest);
    }
    return rows;
}

namespace {

// The columns the direct insert fills, in kCopyColumns order plus server.
enum Column {
    c_at,
    c_key_id,
    c_display_prefix,
    c_merchant_id,
    c_requested_merchant,
    c_scope,
    c_outcome,
    c_sqlstate,
    c_client_addr,
    c_application_name,
    c_request_id,
    c_backend_pid,
    c_source,
    c_cost,
    c_server,
    c_count
};

const char *column_name(int c) { return c == c_server ? kServerColumn : kCopyColumns[c]; }

Datum text_or_null(const char *s, bool *isnull) {
    *isnull = *s == '\0'; // empty: NULL, as encode_copy_binary writes it
    return *isnull ? Datum(0) : PointerGetDatum(cstring_to_text(s));
}

Datum inet_or_null(const LogRecord &r, bool *isnull) {
    *isnull = r.client_family != 4 && r.client_family != 6;
    if (*isnull)
        return Datum(0);
    auto *ip = static_cast<inet *>(palloc0(sizeof(inet)));
    const int nbytes = r.client_family == 4 ? 4 : 16;
    ip_family(ip) = r.client_family == 4 ? PGSQL_AF_INET : PGSQL_AF_INET6;
    ip_bits(ip) = static_cast<unsigned char>(nbytes * 8);
    std::memcpy(ip_addr(ip), r.client_ip, nbytes);
    SET_INET_VARSIZE(ip);
    return InetPGetDatum(ip);
}

// The text of the columns that take one of a few values (outcome, sqlstate,
// source, server), made once per batch instead of once per row. The last
// entry is the text of a value out of range (as the functions name it).
struct CodedTexts {
    static constexpr int kCodes = static_cast<int>(kLastCode) + 2;
    static constexpr int kSources = static_cast<int>(LogSource::report_leaked) + 2;
    Datum outcome[kCodes], sqlstate[kCodes], source[kSources], server = 0;
    bool outcome_null[kCodes], sqlstate_null[kCodes], source_null[kSources], server_null = true;

    explicit CodedTexts(const char *server_name) {
        for (int i = 0; i < kCodes; ++i) {
            outcome[i] = text_or_null(code_name(static_cast<Code>(i)), &outcome_null[i]);
            sqlstate[i] = text_or_null(code_sqlstate(static_cast<Code>(i)), &sqlstate_null[i]);
        }
        for (int i = 0; i < kSources; ++i)
            source[i] = text_or_null(log_source_name(static_cast<LogSource>(i)), &source_null[i]);
        server = text_or_null(server_name ? server_name : "", &server_null);
    }
    Datum coded(const Datum *values, const bool *nulls, int i, int n, bool *isnull) const {
        const int at = i >= 0 && i < n ? i : n - 1;
        *isnull = nulls[at];
        return values[at];
    }
};

// Row i's value of column c.
Datum column_value(const LogRecord &r, int c, const CodedTexts &texts, bool *isnull) {
    *isnull = false;
    const int code = static_cast<int>(r.outcome), source = static_cast<int>(r.source);
    switch (c) {
    case c_at: return TimestampTzGetDatum(r.at);
    case c_key_id: *isnull = !r.has_key_id; return *isnull ? Datum(0) : uuid_datum(r.key_id);
    case c_display_prefix: return text_or_null(r.display_prefix, isnull);
    case c_merchant_id: *isnull = !r.has_merchant_id; return *isnull ? Datum(0) : uuid_datum(r.merchant_id);
    case c_requested_merchant:
        *isnull = !r.has_requested_merchant;
        return *isnull ? Datum(0) : uuid_datum(r.requested_merchant);
    case c_scope: return text_or_null(r.scope, isnull);
    case c_outcome: return texts.coded(texts.outcome, texts.outcome_null, code, CodedTexts::kCodes, isnull);
    case c_sqlstate: return texts.coded(texts.sqlstate, texts.sqlstate_null, code, CodedTexts::kCodes, isnull);
    case c_client_addr: return inet_or_null(r, isnull);
    case c_application_name: return text_or_null(r.application_name, isnull);
    case c_request_id: return text_or_null(r.request_id, isnull);
    case c_backend_pid: return Int32GetDatum(r.backend_pid);
    case c_source: return texts.coded(texts.source, texts.source_null, source, CodedTexts::kSources, isnull);
    case c_cost: return Int32GetDatum(r.cost);
    default: *isnull = texts.server_null; return texts.server;
    }
}

// A relation's attribute number of each column (0: none); false when it has
// a column we do not fill (its default would not be applied).
bool map_columns(Relation rel, AttrNumber *attnums) {
    TupleDesc desc = RelationGetDescr(rel);
    int live = 0;
    for (int i = 0; i < desc->natts; ++i)
        live += TupleDescAttr(desc, i)->attisdropped ? 0 : 1;
    int found = 0;
    for (int c = 0; c < c_count; ++c) {
        attnums[c] = get_attnum(RelationGetRelid(rel), column_name(c));
        found += attnums[c] != InvalidAttrNumber ? 1 : 0;
    }
    return found == c_count && live == c_count;
}

// A partition the direct insert can write: a plain table with no trigger,
// CHECK constraint, unique or exclusion index, and exactly our columns.
bool plain_partition(Relation part, AttrNumber *attnums) {
    if (part->rd_rel->relkind != RELKIND_RELATION || part->trigdesc != nullptr || !map_columns(part, attnums))
        return false;
    if (part->rd_att->constr && part->rd_att->constr->num_check > 0)
        return false;
    return true;
}

// The order in which to insert index `ii`'s entries: by its key when every
// key column is at, key_id or merchant_id ascending (a btree's own order);
// otherwise as the rows come.
struct IndexOrder {
    int fields[INDEX_MAX_KEYS];
    int nfields = 0;
};

bool index_order(Relation index, IndexInfo *ii, const AttrNumber *attnums, IndexOrder *out) {
    if (index->rd_rel->relam != BTREE_AM_OID)
        return false;
    for (int k = 0; k < ii->ii_NumIndexKeyAttrs; ++k) {
        if (index->rd_indoption[k] != 0)
            return false; // DESC or NULLS FIRST
        const AttrNumber a = ii->ii_IndexAttrNumbers[k];
        int field = -1;
        for (int c : {c_at, c_key_id, c_merchant_id})
            if (a != 0 && attnums[c] == a)
                field = c;
        if (field < 0)
            return false;
        out->fields[out->nfields++] = field;
    }
    return out->nfields > 0;
}

int compare_field(const LogRecord &x, const LogRecord &y, int field) {
    if (field == c_at)
        return x.at < y.at ? -1 : x.at > y.at ? 1 : 0;
    const bool xn = field == c_key_id ? !x.has_key_id : !x.has_merchant_id;
    const bool yn = field == c_key_id ? !y.has_key_id : !y.has_merchant_id;
    if (xn || yn)
        return xn == yn ? 0 : xn ? 1 : -1; // NULLs last
    const Uuid &a = field == c_key_id ? x.key_id : x.merchant_id;
    const Uuid &b = field == c_key_id ? y.key_id : y.merchant_id;
    return std::memcmp(a.data(), b.data(), a.size());
}

// The batch's slots, kept from batch to batch (making and dropping one per
// row cost a twentieth of the worker) while the partitions' row type stays
// the same. Their descriptor is a copy without a reference count: slots of
// the relation's own would each pin it in the resource owner (a fifth of the
// worker's time at 10,000-row batches).
MemoryContext slot_context = nullptr;
TupleDesc slot_desc = nullptr;
TupleTableSlot **slot_pool = nullptr; // in slot_context, like the slots
int slot_count = 0;

TupleTableSlot **slots_for(TupleDesc rel_desc, int n) {
    if (!slot_context)
        slot_context = AllocSetContextCreate(TopMemoryContext, "flint_keys log slots", ALLOCSET_DEFAULT_SIZES);
    MemoryContext old = MemoryContextSwitchTo(slot_context);
    if (!slot_desc || !equalTupleDescs(slot_desc, rel_desc)) {
        slot_desc = nullptr; // before the reset: an error below leaves nothing dangling
        slot_pool = nullptr;
        slot_count = 0;
        MemoryContextReset(slot_context); // the slots, their array and descriptor
        slot_desc = CreateTupleDescCopy(rel_desc);
    }
    if (slot_count < n) {
        auto **grown = static_cast<TupleTableSlot **>(palloc(sizeof(TupleTableSlot *) * n));
        for (int i = 0; i < n; ++i)
            grown[i] = i < slot_count ? slot_pool[i] : MakeSingleTupleTableSlot(slot_desc, &TTSOpsVirtual);
        if (slot_pool)
            pfree(slot_pool);
        slot_pool = grown;
        slot_count = n;
    }
    MemoryContextSwitchTo(old);
    return slot_pool;
}

// Inserts rows[idx[0..n)] into partition `part`: heap first, then each index.
void insert_into_partition_unsafe(ResultRelInfo *rri, const AttrNumber *attnums, const LogRecord *rows,
                                  const uint32 *idx, int n, const char *server) {
    Relation part = rri->ri_RelationDesc;
    TupleTableSlot **slots = slots_for(RelationGetDescr(part), n);
    TupleDesc desc = slots[0]->tts_tupleDescriptor;
    const CodedTexts texts(server);
    for (int i = 0; i < n; ++i) {
        TupleTableSlot *slot = slots[i];
        ExecClearTuple(slot);
        for (int a = 0; a < desc->natts; ++a)
            slot->tts_isnull[a] = true; // dropped columns
        for (int c = 0; c < c_count; ++c) {
            const int a = attnums[c] - 1;
            slot->tts_values[a] = column_value(rows[idx[i]], c, texts, &slot->tts_isnull[a]);
        }
        ExecStoreVirtualTuple(slot);
    }
    // The heap: as COPY does, 1,000 tuples per multi-insert, one bulk-insert
    // state (a ring of buffers, the last page kept pinned).
    BulkInsertState bistate = GetBulkInsertState();
    const CommandId cid = GetCurrentCommandId(true);
    for (int i = 0; i < n; i += 1000)
        table_multi_insert(part, slots + i, std::min(1000, n - i), cid, 0, bistate);
    FreeBulkInsertState(bistate);

    EState *estate = CreateExecutorState();
    ExprContext *econtext = GetPerTupleExprContext(estate);
    auto *order = static_cast<int *>(palloc(sizeof(int) * n));
    for (int x = 0; x < rri->ri_NumIndices; ++x) {
        Relation index = rri->ri_IndexRelationDescs[x];
        IndexInfo *ii = rri->ri_IndexRelationInfo[x];
        if (!ii->ii_ReadyForInserts)
            continue; // being built concurrently: not yet taking entries
        for (int i = 0; i < n; ++i)
            order[i] = i;
        IndexOrder by;
        if (index_order(index, ii, attnums, &by))
            std::sort(order, order + n, [&](int a, int b) { // in place: no allocation to fail
                for (int f = 0; f < by.nfields; ++f)
                    if (int d = compare_field(rows[idx[a]], rows[idx[b]], by.fields[f]))
                        return d < 0;
                return a < b;
            });
        ExprState *predicate = ii->ii_Predicate != NIL ? ExecPrepareQual(ii->ii_Predicate, estate) : nullptr;
        Datum values[INDEX_MAX_KEYS];
        bool isnull[INDEX_MAX_KEYS];
        for (int i = 0; i < n; ++i) {
            TupleTableSlot *slot = slots[order[i]];
            ResetExprContext(econtext);
            econtext->ecxt_scantuple = slot;
            if (predicate && !ExecQual(predicate, econtext))
                continue;
            FormIndexDatum(ii, slot, estate, values, isnull);
            (void)index_insert(index, values, isnull, &slot->tts_tid, part, UNIQUE_CHECK_NO, false, ii);
        }
    }
    FreeExecutorState(estate);
    for (int i = 0; i < n; ++i)
        ExecClearTuple(slots[i]); // the tuples go; the slots stay for the next batch
}

} // namespace

bool insert_rows_direct_unsafe(const LogTable &table, const LogRecord *rows, size_t count, const char *server,
                               int64 *mark_out) {
    if (count == 0 || count > static_cast<size_t>(INT_MAX))
        return false;
    const int n = static_cast<int>(count);
    Relation rel = table_open(table.relid, RowExclusiveLock);
    AttrNumber attnums[c_count];
    PartitionKey key = rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE ? RelationGetPartitionKey(rel) : nullptr;
    PartitionDesc pd = key ? RelationGetPartitionDesc(rel, true) : nullptr;
    bool known = key && key->strategy == PARTITION_STRATEGY_RANGE && key->partnatts == 1 && rel->trigdesc == nullptr &&
                 pd->nparts > 0 && pd->boundinfo && map_columns(rel, attnums) && key->partattrs[0] == attnums[c_at];
    // Each row's partition, by the same search COPY's tuple routing does.
    auto *part_of = static_cast<int *>(palloc(sizeof(int) * n));
    for (int i = 0; known && i < n; ++i) {
        Datum at = TimestampTzGetDatum(rows[i].at);
        bool equal = false;
        int bound = partition_range_datum_bsearch(key->partsupfunc, key->partcollation, pd->boundinfo, 1, &at, &equal);
        part_of[i] = pd->boundinfo->indexes[bound + 1];
        if (part_of[i] < 0)
            part_of[i] = pd->boundinfo->default_index;
        known = part_of[i] >= 0;
    }
    // Each partition the batch touches, checked before anything is inserted.
    auto *parts = static_cast<int *>(palloc(sizeof(int) * n));
    int nparts = 0;
    for (int i = 0; known && i < n; ++i) {
        bool seen = false;
        for (int p = 0; p < nparts && !seen; ++p)
            seen = parts[p] == part_of[i];
        if (!seen)
            parts[nparts++] = part_of[i];
    }
    auto *targets = static_cast<ResultRelInfo **>(palloc0(sizeof(ResultRelInfo *) * std::max(nparts, 1)));
    auto *partattnums = static_cast<AttrNumber *>(palloc(sizeof(AttrNumber) * c_count * std::max(nparts, 1)));
    for (int p = 0; known && p < nparts; ++p) {
        Relation part = table_open(pd->oids[parts[p]], RowExclusiveLock);
        targets[p] = makeNode(ResultRelInfo);
        InitResultRelInfo(targets[p], part, 1, nullptr, 0);
        ExecOpenIndices(targets[p], false);
        known = plain_partition(part, partattnums + p * c_count);
        for (int x = 0; known && x < targets[p]->ri_NumIndices; ++x)
            known = !targets[p]->ri_IndexRelationDescs[x]->rd_index->indisunique &&
                    targets[p]->ri_IndexRelationInfo[x]->ii_ExclusionOps == nullptr;
    }
    if (known) {
        auto *idx = static_cast<uint32 *>(palloc(sizeof(uint32) * n));
        for (int p = 0; p < nparts; ++p) {
            int m = 0;
            for (int i = 0; i < n; ++i)
                if (part_of[i] == parts[p])
                    idx[m++] = static_cast<uint32>(i);
            insert_into_partition_unsafe(targets[p], partattnums + p * c_count, rows, idx, m, server);
        }
    }
    for (int p = 0; p < nparts; ++p)
        if (targets[p]) {
            ExecCloseIndices(targets[p]);
            table_close(targets[p]->ri_RelationDesc, NoLock);
        }
    table_close(rel, NoLock);
    if (!known)
        return false;
    if (table.has_usage) {
        // As copy_into_log_unsafe: rows for a time already rolled up add their groups now.
        const int64 mark = usage_watermark_unsafe();
        UsageRollup rollup;
        for (int i = 0; i < n; ++i) {
            const LogRecord &r = rows[i];
            if (r.at < mark)
                rollup.add(r.at, r.has_merchant_id ? &r.merchant_id : nullptr, r.has_key_id ? &r.key_id : nullptr,
                           code_name(r.outcome), r.cost);
        }
        add_usage_unsafe(rollup);
        *mark_out = mark;
    }
    return true;
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
        *rows = copy_into_log_unsafe(table, data, len, nullptr);
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
