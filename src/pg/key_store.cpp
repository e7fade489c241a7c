#include "key_store.hpp"

#include "datums.hpp"
#include "error_boundary.hpp"
#include "key_cache.hpp"
#include "state.hpp"

extern "C" {
#include "common/pg_prng.h"
#include "storage/bufmgr.h"
#include "utils/inet.h"
#include "access/xlog.h"
#include "utils/inval.h"
}

namespace flint::pg {

namespace {

struct Relations {
    Oid keys = InvalidOid, keys_pkey = InvalidOid;
    Oid merchants = InvalidOid, merchants_pkey = InvalidOid;
    Oid scopes = InvalidOid;
    // 1.3 (absent before the upgrade: the library may be newer than the SQL)
    Oid roles = InvalidOid, roles_pkey = InvalidOid;
    Oid key_roles = InvalidOid, key_roles_pkey = InvalidOid;
};

// The key cache's slots live in their own memory context, a child of
// CacheMemoryContext, so pg_backend_memory_contexts shows them ("flint_keys
// key cache"). Allocation failure is not an error: the cache stays smaller.
// All backends' caches together stay within flint.key_cache_total: each
// block is counted in shared memory while this backend holds it.
MemoryContext key_cache_context = nullptr;
uint64 my_cache_bytes = 0;       // counted in shared_state->key_cache_bytes
bool cache_accounting_on = true; // off once this backend's count is given back at exit

void give_back_cache_bytes(int, Datum) {
    if (shared_state)
        pg_atomic_fetch_sub_u64(&shared_state->key_cache_bytes, my_cache_bytes);
    my_cache_bytes = 0;
    cache_accounting_on = false;
}

void *key_cache_alloc(size_t bytes, void *) {
    if (!key_cache_context) {
        key_cache_context = AllocSetContextCreate(CacheMemoryContext, "flint_keys key cache", ALLOCSET_DEFAULT_SIZES);
        on_shmem_exit(give_back_cache_bytes, 0);
    }
    const uint64 limit = uint64(guc_key_cache_total_mb) * 1024 * 1024;
    if (limit > 0 && shared_state && pg_atomic_read_u64(&shared_state->key_cache_bytes) + bytes > limit)
        return nullptr; // the server's caches are full: this one stays as it is
    // MCXT_ALLOC_NO_OOM: returns NULL instead of raising (we are in C++ here).
    void *block = MemoryContextAllocExtended(key_cache_context, bytes, MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
    if (block && shared_state && cache_accounting_on) {
        const uint64 space = GetMemoryChunkSpace(block);
        pg_atomic_fetch_add_u64(&shared_state->key_cache_bytes, space);
        my_cache_bytes += space;
    }
    return block;
}
// At process exit the static cache is destroyed after Postgres has let go of
// its memory: leave the block to the exiting process then.
void key_cache_free(void *block, void *) {
    if (proc_exit_inprogress)
        return;
    if (shared_state && cache_accounting_on) {
        const uint64 space = std::min<uint64>(GetMemoryChunkSpace(block), my_cache_bytes);
        pg_atomic_fetch_sub_u64(&shared_state->key_cache_bytes, space);
        my_cache_bytes -= space;
    }
    pfree(block);
}

struct Cache {
    uint64 generation = 0;
    Oid keys_relid = InvalidOid;
    KeyCache keys{key_cache_alloc, key_cache_free, nullptr};
    std::vector<std::string> catalog;
    bool catalog_loaded = false;
    int roles_held = -1; // does any key hold a role (flint.key_roles has rows)? -1: not looked yet
    void clear() {
        keys.clear();
        catalog.clear();
        catalog_loaded = false;
        roles_held = -1;
    }
};

Cache cache;
KeyRecord found; // the answer of the last lookup, reused (its strings keep their capacity)
bool changed_in_this_transaction = false;
// What this transaction changed: keys wholesale (a key, merchant or scope
// row), or only the keys listed (a role's holders: note_keys_changed_for).
bool changed_wholesale = false;
std::vector<Uuid> changed_keys;

// The flint relations' OIDs, resolved once and forgotten when the relcache
// says one of them changed (dropped, renamed, the extension re-created).
Relations known_relations;
bool relations_known = false;

// Set by a relcache invalidation of api_keys, merchants or scopes. Every
// committed key change sends one (note_keys_changed): the commit's WAL record
// carries it, so a hot standby drops its backends' caches as soon as it has
// replayed the change, where the primary's shared generation counter never
// moves.
bool invalidated_by_wal = false;

void forget_relations(Datum, Oid relid) {
    const bool roles = OidIsValid(relid) && (relid == known_relations.roles || relid == known_relations.key_roles);
    if (!OidIsValid(relid) || relid == known_relations.keys || relid == known_relations.keys_pkey ||
        relid == known_relations.merchants || relid == known_relations.merchants_pkey ||
        relid == known_relations.scopes || roles) {
        relations_known = false;
        // A role change on a primary reloads only its holders (the shared
        // generation and its list of keys); a standby has only the WAL's
        // relcache invalidation, and reloads every key.
        if (!roles || RecoveryInProgress())
            invalidated_by_wal = true;
    }
}
std::optional<KeyRecord> uncached; // the answer when the cache is bypassed

void resolve_relations_unsafe(Relations *rels) {
    Oid nsp = get_namespace_oid("flint", true);
    if (OidIsValid(nsp)) {
        rels->keys = get_relname_relid("api_keys", nsp);
        rels->keys_pkey = get_relname_relid("api_keys_pkey", nsp);
        rels->merchants = get_relname_relid("merchants", nsp);
        rels->merchants_pkey = get_relname_relid("merchants_pkey", nsp);
        rels->scopes = get_relname_relid("scopes", nsp);
        rels->roles = get_relname_relid("roles", nsp);
        rels->roles_pkey = get_relname_relid("roles_pkey", nsp);
        rels->key_roles = get_relname_relid("key_roles", nsp);
        rels->key_roles_pkey = get_relname_relid("key_roles_pkey", nsp);
    }
    if (!OidIsValid(rels->keys) || !OidIsValid(rels->keys_pkey) || !OidIsValid(rels->merchants) ||
        !OidIsValid(rels->merchants_pkey) || !OidIsValid(rels->scopes))
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE), errmsg("flint_keys is not installed in this database"),
                        errhint("Run CREATE EXTENSION flint_keys.")));
}

// The column's number; InvalidAttrNumber when it is missing and optional
// (a column a later upgrade script adds: the library may be newer than the SQL).
AttrNumber column_unsafe(TupleDesc desc, const char *name, bool optional = false) {
    for (int i = 0; i < desc->natts; ++i) {
        Form_pg_attribute att = TupleDescAttr(desc, i);
        if (!att->attisdropped && std::strcmp(NameStr(att->attname), name) == 0)
            return att->attnum;
    }
    if (!optional)
        elog(ERROR, "flint_keys: column \"%s\" is missing", name);
    return InvalidAttrNumber;
}

// A key row as copied out of the buffer, in palloc'd memory.
struct KeyRow {
    bool found;   // the id's own row
    bool has_row; // found, or the decoy an unknown id reads instead (README "Timing")
    pg_uuid_t merchant_id;
    char mode[8];
    char display_prefix[32];
    bytea *secret_hash;
    bytea *previous_secret_hash;
    bool has_previous_expires, has_expires, revoked, disabled, merchant_suspended;
    TimestampTz previous_expires, expires;
    Datum *scopes;
    int nscopes;
    List *role_scopes; // text Datums of the key's roles' scopes (1.3)
    // traffic controls (1.2 columns; absent before the upgrade)
    int32 rate_limit, merchant_rate_limit;
    int64 rate_window_us, merchant_rate_window_us;
    bool has_quota;
    Refill refill;
    int64 quota_version;
    int nips;
    Cidr ips[16];
};

// The optional 1.2 columns of a key or merchant row: rate_limit/rate_window.
void read_rate_unsafe(HeapTuple tuple, TupleDesc desc, int32 *limit, int64 *window_us) {
    AttrNumber lcol = column_unsafe(desc, "rate_limit", true), wcol = column_unsafe(desc, "rate_window", true);
    *limit = 0;
    *window_us = 0;
    if (lcol == InvalidAttrNumber || wcol == InvalidAttrNumber)
        return;
    bool lnull, wnull;
    Datum l = heap_getattr(tuple, lcol, desc, &lnull), w = heap_getattr(tuple, wcol, desc, &wnull);
    if (!lnull && !wnull) {
        *limit = DatumGetInt32(l);
        *window_us = interval_us(w);
    }
}

void read_quota_and_ips_unsafe(HeapTuple tuple, TupleDesc desc, KeyRow *out) {
    bool isnull;
    AttrNumber col = column_unsafe(desc, "remaining", true);
    out->has_quota = col != InvalidAttrNumber && (heap_getattr(tuple, col, desc, &isnull), !isnull);
    out->refill = Refill::none;
    if ((col = column_unsafe(desc, "refill_interval", true)) != InvalidAttrNumber) {
        Datum d = heap_getattr(tuple, col, desc, &isnull);
        if (!isnull)
            out->refill = parse_refill(TextDatumGetCString(d)).value_or(Refill::day); // the column's CHECK: day, month
    }
    out->quota_version = 0;
    if ((col = column_unsafe(desc, "quota_version", true)) != InvalidAttrNumber) {
        Datum d = heap_getattr(tuple, col, desc, &isnull);
        out->quota_version = isnull ? 0 : DatumGetInt64(d);
    }
    out->nips = 0;
    if ((col = column_unsafe(desc, "allowed_ips", true)) != InvalidAttrNumber) {
        Datum d = heap_getattr(tuple, col, desc, &isnull);
        if (!isnull) {
            Datum *elems;
            bool *nulls;
            int n;
            deconstruct_array(DatumGetArrayTypeP(d), CIDROID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
            for (int i = 0; i < n && out->nips < 16; ++i) {
                if (nulls[i])
                    continue;
                inet *net = DatumGetInetPP(elems[i]);
                Cidr &c = out->ips[out->nips++];
                c.family = ip_family(net) == PGSQL_AF_INET ? 4 : 6;
                c.bits = ip_bits(net);
                std::memcpy(c.bytes, ip_addr(net), c.family == 4 ? 4 : 16);
            }
        }
    }
}

// One row by primary key with a registered latest snapshot.
HeapTuple fetch_by_pkey_unsafe(Relation rel, Oid index, const pg_uuid_t *id, Snapshot snapshot) {
    ScanKeyData key;
    ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(id));
    SysScanDesc scan = systable_beginscan(rel, index, true, snapshot, 1, &key);
    HeapTuple tuple = systable_getnext(scan);
    HeapTuple copy = HeapTupleIsValid(tuple) ? heap_copytuple(tuple) : nullptr;
    systable_endscan(scan);
    return copy;
}

// The scopes of the key's roles (flint.key_roles, then each flint.roles row).
void load_role_scopes_unsafe(const Relations *rels, const pg_uuid_t *key_id, Snapshot snapshot, KeyRow *out) {
    out->role_scopes = NIL;
    if (!OidIsValid(rels->roles) || !OidIsValid(rels->roles_pkey) || !OidIsValid(rels->key_roles) ||
        !OidIsValid(rels->key_roles_pkey))
        return;
    Relation key_roles = table_open(rels->key_roles, AccessShareLock);
    TupleDesc kr_desc = RelationGetDescr(key_roles);
    ScanKeyData key;
    ScanKeyInit(&key, column_unsafe(kr_desc, "key_id"), BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(key_id));
    SysScanDesc scan = systable_beginscan(key_roles, rels->key_roles_pkey, true, snapshot, 1, &key);
    const AttrNumber role_col = column_unsafe(kr_desc, "role_id");
    List *role_ids = NIL;
    HeapTuple tuple;
    while (HeapTupleIsValid(tuple = systable_getnext(scan))) {
        bool isnull;
        Datum d = heap_getattr(tuple, role_col, kr_desc, &isnull);
        if (!isnull) {
            auto *copy = static_cast<pg_uuid_t *>(palloc(sizeof(pg_uuid_t)));
            *copy = *DatumGetUUIDP(d);
            role_ids = lappend(role_ids, copy);
        }
    }
    systable_endscan(scan);
    table_close(key_roles, AccessShareLock);
    if (role_ids == NIL)
        return;
    Relation roles = table_open(rels->roles, AccessShareLock);
    TupleDesc desc = RelationGetDescr(roles);
    const AttrNumber scopes_col = column_unsafe(desc, "scopes");
    ListCell *lc;
    foreach (lc, role_ids) {
        HeapTuple role = fetch_by_pkey_unsafe(roles, rels->roles_pkey, static_cast<pg_uuid_t *>(lfirst(lc)), snapshot);
        if (!role)
            continue;
        bool isnull;
        Datum d = heap_getattr(role, scopes_col, desc, &isnull);
        if (isnull)
            continue;
        Datum *elems;
        bool *nulls;
        int n;
        deconstruct_array(DatumGetArrayTypePCopy(d), TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
        for (int i = 0; i < n; ++i)
            if (!nulls[i])
                out->role_scopes = lappend(out->role_scopes, DatumGetPointer(elems[i]));
    }
    table_close(roles, AccessShareLock);
}

// Does any key hold a role? While none does (a database without roles), a
// key's load skips the role lookup; any change to flint.key_roles clears the
// cache and with it this answer.
bool any_role_held_unsafe(const Relations *rels, Snapshot snapshot) {
    if (!OidIsValid(rels->key_roles))
        return false;
    Relation rel = table_open(rels->key_roles, AccessShareLock);
    SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, snapshot, 0, nullptr);
    bool any = HeapTupleIsValid(systable_getnext(scan));
    systable_endscan(scan);
    table_close(rel, AccessShareLock);
    return any;
}

// A key row's columns, as verification needs them.
void decode_key_row_unsafe(HeapTuple tuple, TupleDesc desc, KeyRow *out) {
    bool isnull;
    auto get = [&](const char *name) { return heap_getattr(tuple, column_unsafe(desc, name), desc, &isnull); };
    Datum d = get("merchant_id");
    out->merchant_id = *DatumGetUUIDP(d);
    d = get("mode");
    text_to_cstring_buffer(DatumGetTextPP(d), out->mode, sizeof out->mode);
    d = get("display_prefix");
    text_to_cstring_buffer(DatumGetTextPP(d), out->display_prefix, sizeof out->display_prefix);
    d = get("secret_hash");
    out->secret_hash = DatumGetByteaPCopy(d);
    d = get("previous_secret_hash");
    out->previous_secret_hash = isnull ? nullptr : DatumGetByteaPCopy(d);
    d = get("previous_secret_expires_at");
    out->has_previous_expires = !isnull;
    out->previous_expires = isnull ? 0 : DatumGetTimestampTz(d);
    d = get("expires_at");
    out->has_expires = !isnull;
    out->expires = isnull ? 0 : DatumGetTimestampTz(d);
    get("revoked_at");
    out->revoked = !isnull;
    AttrNumber disabled_col = column_unsafe(desc, "disabled_at", /*optional=*/true); // since 1.2
    if (disabled_col != InvalidAttrNumber) {
        (void)heap_getattr(tuple, disabled_col, desc, &isnull);
        out->disabled = !isnull;
    }
    d = get("scopes");
    bool *elem_nulls;
    deconstruct_array(DatumGetArrayTypePCopy(d), TEXTOID, -1, false, TYPALIGN_INT, &out->scopes, &elem_nulls,
                      &out->nscopes);
    for (int i = 0; i < out->nscopes; ++i)
        if (elem_nulls[i])
            out->scopes[i] = PointerGetDatum(cstring_to_text(""));
    read_rate_unsafe(tuple, desc, &out->rate_limit, &out->rate_window_us);
    read_quota_and_ips_unsafe(tuple, desc, out);
}

// An uncached lookup of an unknown id must take as long as one of an
// existing key (README "Security"): it reads a random page of the key table
// and decodes a copy of a real key row (the last one this backend found, or
// the table's first), fetches that key's merchant, as a found key does, and
// load_key builds its record; then all of it is thrown away.
HeapTuple decoy_key_row = nullptr; // in TopMemoryContext

void keep_decoy_unsafe(HeapTuple tuple) {
    MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
    HeapTuple copy = heap_copytuple(tuple);
    MemoryContextSwitchTo(old);
    if (decoy_key_row)
        heap_freetuple(decoy_key_row);
    decoy_key_row = copy;
}

void load_key_unsafe(const Relations *rels, const pg_uuid_t *id, int *roles_held, KeyRow *out) {
    Snapshot snapshot = RegisterSnapshot(GetLatestSnapshot());
    Relation keys = table_open(rels->keys, AccessShareLock);
    HeapTuple tuple = fetch_by_pkey_unsafe(keys, rels->keys_pkey, id, snapshot);
    out->found = tuple != nullptr;
    if (out->found) {
        keep_decoy_unsafe(tuple); // the latest: its page surely exists, and pages spread over the table
    } else if (!out->found) {
        if (!decoy_key_row) { // once per backend: any key row will do
            SysScanDesc scan = systable_beginscan(keys, InvalidOid, false, snapshot, 0, nullptr);
            if (HeapTuple first = systable_getnext(scan); HeapTupleIsValid(first))
                keep_decoy_unsafe(first);
            systable_endscan(scan);
        }
        tuple = decoy_key_row ? heap_copytuple(decoy_key_row) : nullptr;
        // A found key's row is on a page of its own, which may not be in
        // shared buffers: read a random page, as likely to miss, among those
        // up to the decoy's (a page below a row read lately still exists:
        // vacuum truncates only empty pages at the end).
        if (decoy_key_row && ItemPointerIsValid(&decoy_key_row->t_self)) {
            const uint64 last = ItemPointerGetBlockNumber(&decoy_key_row->t_self);
            Buffer page =
                ReadBuffer(keys, static_cast<BlockNumber>(pg_prng_uint64_range(&pg_global_prng_state, 0, last)));
            LockBuffer(page, BUFFER_LOCK_SHARE);
            UnlockReleaseBuffer(page);
        }
    }
    out->has_row = tuple != nullptr;
    if (out->has_row)
        decode_key_row_unsafe(tuple, RelationGetDescr(keys), out);
    table_close(keys, AccessShareLock);
    // Once any key holds a role, unknown ids look for roles too: the time of
    // a lookup must not tell whether the id exists.
    out->role_scopes = NIL;
    if (*roles_held < 0)
        *roles_held = any_role_held_unsafe(rels, snapshot) ? 1 : 0;
    if (*roles_held > 0)
        load_role_scopes_unsafe(rels, id, snapshot, out);

    out->merchant_suspended = false;
    {
        // The merchant lookup runs for unknown ids too (the decoy's merchant).
        static const pg_uuid_t no_merchant = {};
        Relation merchants = table_open(rels->merchants, AccessShareLock);
        HeapTuple m = fetch_by_pkey_unsafe(merchants, rels->merchants_pkey,
                                           out->has_row ? &out->merchant_id : &no_merchant, snapshot);
        // A key whose merchant row is gone (impossible under the foreign key) counts as suspended.
        out->merchant_suspended = true;
        if (m) {
            TupleDesc desc = RelationGetDescr(merchants);
            bool isnull;
            Datum status = heap_getattr(m, column_unsafe(desc, "status"), desc, &isnull);
            out->merchant_suspended = isnull || std::strcmp(TextDatumGetCString(status), "active") != 0;
            read_rate_unsafe(m, desc, &out->merchant_rate_limit, &out->merchant_rate_window_us);
        }
        table_close(merchants, AccessShareLock);
    }
    UnregisterSnapshot(snapshot);
}

void load_catalog_unsafe(const Relations *rels, List **names) {
    Snapshot snapshot = RegisterSnapshot(GetLatestSnapshot());
    Relation rel = table_open(rels->scopes, AccessShareLock);
    SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, snapshot, 0, nullptr);
    TupleDesc desc = RelationGetDescr(rel);
    AttrNumber name_col = column_unsafe(desc, "name");
    HeapTuple tuple;
    while (HeapTupleIsValid(tuple = systable_getnext(scan))) {
        bool isnull;
        Datum d = heap_getattr(tuple, name_col, desc, &isnull);
        if (!isnull)
            *names = lappend(*names, TextDatumGetCString(d));
    }
    systable_endscan(scan);
    table_close(rel, AccessShareLock);
    UnregisterSnapshot(snapshot);
}

std::optional<Digest> to_digest(const bytea *b) {
    if (!b || VARSIZE_ANY_EXHDR(b) != sizeof(Digest))
        return std::nullopt;
    Digest d;
    std::memcpy(d.data(), VARDATA_ANY(b), d.size());
    return d;
}

// *roles_held: the cache's answer to "does any key hold a role" (-1: unknown, then set).
std::optional<KeyRecord> load_key(const Relations &rels, const Uuid &id, int *roles_held) {
    KeyRow row{};
    pg_uuid_t pid;
    std::memcpy(pid.data, id.data(), id.size());
    pg_guard([&] { load_key_unsafe(&rels, &pid, roles_held, &row); });
    if (!row.has_row)
        return std::nullopt;
    KeyRecord rec;
    rec.id = id;
    std::memcpy(rec.merchant_id.data(), row.merchant_id.data, rec.merchant_id.size());
    rec.mode = parse_mode(row.mode).value_or(Mode::live);
    rec.display_prefix = row.display_prefix;
    auto current = to_digest(row.secret_hash);
    if (!current) // a corrupted hash can never match: treat as no key
        return std::nullopt;
    rec.secret_hash = *current;
    rec.previous_secret_hash = to_digest(row.previous_secret_hash);
    if (row.has_previous_expires)
        rec.previous_secret_expires_at = row.previous_expires;
    if (row.has_expires)
        rec.expires_at = row.expires;
    rec.revoked = row.revoked;
    rec.disabled = row.disabled;
    rec.merchant_suspended = row.merchant_suspended;
    rec.rate_limit = row.rate_limit;
    rec.rate_window_us = row.rate_window_us;
    rec.merchant_rate_limit = row.merchant_rate_limit;
    rec.merchant_rate_window_us = row.merchant_rate_window_us;
    rec.has_quota = row.has_quota;
    rec.refill = row.refill;
    rec.quota_version = row.quota_version;
    rec.allowed_ips.assign(row.ips, row.ips + row.nips);
    for (int i = 0; i < row.nscopes; ++i) {
        const text *t = reinterpret_cast<const text *>(DatumGetPointer(row.scopes[i]));
        rec.scopes.emplace_back(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
    }
    // Verification checks the effective scopes: the key's own and its roles'.
    if (row.role_scopes != NIL) {
        ListCell *lc;
        foreach (lc, row.role_scopes) {
            const text *t = static_cast<const text *>(lfirst(lc));
            rec.scopes.emplace_back(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
        }
        std::sort(rec.scopes.begin(), rec.scopes.end());
        rec.scopes.erase(std::unique(rec.scopes.begin(), rec.scopes.end()), rec.scopes.end());
    }
    if (!row.found)
        return std::nullopt; // the decoy's record: built only to take the same time
    return rec;
}

// The cache is at generation `from`, the server at `to`: forgets the keys
// changed in between when only some were (true), else false (reload all).
bool forget_changed_keys(uint64 from, uint64 to) {
    KeyInvalidations &inv = shared_state->key_invalidations;
    std::vector<Uuid> ids;
    bool partial = false;
    SpinLockAcquire(&inv.lock);
    if (inv.full_generation <= from && inv.dropped_generation <= from) {
        partial = true;
        const uint64 first = inv.written > kKeyInvalidations ? inv.written - kKeyInvalidations : 0;
        for (uint64 i = first; i < inv.written; ++i) {
            const auto &e = inv.ring[i % kKeyInvalidations];
            if (e.generation > from && e.generation <= to && ids.size() < kKeyInvalidations) {
                Uuid id;
                std::memcpy(id.data(), e.id, 16);
                ids.push_back(id);
            }
        }
    }
    SpinLockRelease(&inv.lock);
    for (const Uuid &id : ids)
        cache.keys.erase(id);
    return partial;
}

// Drops the cache if the shared generation or the table moved; returns whether it may be used.
bool sync_cache(Relations &rels) {
    if (!shared_state)
        pg_guard([] { require_preload_unsafe(); });
    if (!relations_known) {
        static bool callback_registered = false;
        pg_guard([&] {
            if (!callback_registered) {
                CacheRegisterRelcacheCallback(forget_relations, (Datum)0);
                callback_registered = true;
            }
            resolve_relations_unsafe(&known_relations);
        });
        relations_known = true;
    }
    rels = known_relations;
    // Read before any snapshot is taken: a commit we miss now bumps it again for next time.
    if (RecoveryInProgress()) // a standby: take in what replay has invalidated so far
        pg_guard([] { AcceptInvalidationMessages(); });
    uint64 generation = pg_atomic_read_u64(&shared_state->keys_generation);
    pg_read_barrier();
    bool usable = guc_key_cache && !changed_in_this_transaction;
    if (usable && generation != cache.generation && rels.keys == cache.keys_relid && !invalidated_by_wal &&
        forget_changed_keys(cache.generation, generation)) {
        cache.generation = generation; // only some keys changed: the others stay
    } else if (!usable || generation != cache.generation || rels.keys != cache.keys_relid || invalidated_by_wal) {
        invalidated_by_wal = false;
        cache.clear();
        cache.generation = generation;
        cache.keys_relid = rels.keys;
    }
    return usable;
}

// The catalog, after sync_cache: never drops the key entries.
const std::vector<std::string> &catalog_after_sync(const Relations &rels, bool use_cache) {
    if (use_cache && cache.catalog_loaded)
        return cache.catalog;
    List *names = NIL;
    pg_guard([&] { load_catalog_unsafe(&rels, &names); });
    cache.catalog.clear();
    ListCell *lc;
    foreach (lc, names)
        cache.catalog.emplace_back(static_cast<const char *>(lfirst(lc)));
    cache.catalog_loaded = use_cache;
    return cache.catalog;
}

const KeyRecord *find_key_after_sync(const Relations &rels, bool use_cache, const Uuid &id) {
    if (use_cache) {
        bool exists = false;
        if (cache.keys.find(id, &found, &exists)) {
            pg_atomic_fetch_add_u64(&shared_state->cache_hits, 1);
            return exists ? &found : nullptr;
        }
        pg_atomic_fetch_add_u64(&shared_state->cache_misses, 1);
    }
    int uncached_roles_held = -1; // not cached: ask again
    uncached = load_key(rels, id, use_cache ? &cache.roles_held : &uncached_roles_held);
    if (use_cache) {
        cache.keys.set_max_keys(static_cast<size_t>(guc_key_cache_size));
        (void)cache.keys.store(id, uncached ? &*uncached : nullptr); // not cached: read again next time
    }
    return uncached ? &*uncached : nullptr;
}

} // namespace

const KeyRecord *find_key(const Uuid &id, const std::vector<std::string> **catalog) {
    Relations rels;
    bool use_cache = sync_cache(rels);
    const KeyRecord *key = find_key_after_sync(rels, use_cache, id);
    if (catalog)
        *catalog = &catalog_after_sync(rels, use_cache);
    return key;
}

const std::vector<std::string> &scope_catalog() {
    Relations rels;
    bool use_cache = sync_cache(rels);
    return catalog_after_sync(rels, use_cache);
}

void note_keys_changed_for(Oid relid, const std::vector<Uuid> &ids) {
    changed_in_this_transaction = true;
    cache.clear(); // this transaction reads the tables until it ends
    changed_keys.insert(changed_keys.end(), ids.begin(), ids.end());
    // Standbys reload every key when they replay it (forget_relations).
    pg_guard([relid] { CacheInvalidateRelcacheByRelid(relid); });
}

void note_keys_changed(Oid relid) {
    changed_in_this_transaction = true;
    changed_wholesale = true;
    cache.clear();
    // At commit every backend, here and on every standby after replay, gets a
    // relcache invalidation of the changed table: see invalidated_by_wal.
    pg_guard([relid] { CacheInvalidateRelcacheByRelid(relid); });
}

namespace {
// Transaction end: publish a change at commit, forget what this transaction saw.
void on_xact(XactEvent event, void *) {
    switch (event) {
    case XACT_EVENT_COMMIT:
    case XACT_EVENT_PARALLEL_COMMIT: key_store_at_commit(); break;
    case XACT_EVENT_ABORT:
    case XACT_EVENT_PARALLEL_ABORT:
    case XACT_EVENT_PREPARE: key_store_at_abort(); break;
    case XACT_EVENT_PRE_PREPARE: key_store_before_prepare(); break;
    default: break;
    }
}
} // namespace

void key_store_init() { RegisterXactCallback(on_xact, nullptr); }

void key_store_at_commit() {
    in_bookkeeping = false;
    if (!changed_in_this_transaction)
        return;
    changed_in_this_transaction = false;
    cache.clear();
    // After the commit is visible to new snapshots: every later verification
    // anywhere sees the new generation and reloads the keys it changed (all
    // of them, unless only a role's holders changed).
    if (shared_state) {
        KeyInvalidations &inv = shared_state->key_invalidations;
        const bool wholesale = changed_wholesale || changed_keys.size() > kKeyInvalidations / 4;
        SpinLockAcquire(&inv.lock);
        const uint64 generation = pg_atomic_read_u64(&shared_state->keys_generation) + 1;
        if (wholesale) {
            inv.full_generation = generation;
        } else {
            for (const Uuid &id : changed_keys) {
                auto &e = inv.ring[inv.written % kKeyInvalidations];
                if (inv.written >= kKeyInvalidations) // overwriting: a cache this old reloads all
                    inv.dropped_generation = std::max(inv.dropped_generation, e.generation);
                e.generation = generation;
                std::memcpy(e.id, id.data(), 16);
                ++inv.written;
            }
        }
        pg_write_barrier();
        pg_atomic_write_u64(&shared_state->keys_generation, generation);
        SpinLockRelease(&inv.lock);
    }
    changed_wholesale = false;
    changed_keys.clear();
}

void key_store_at_abort() {
    in_bookkeeping = false;
    changed_wholesale = false;
    changed_keys.clear();
    if (!changed_in_this_transaction)
        return;
    changed_in_this_transaction = false;
    cache.clear();
}

void key_store_before_prepare() {
    if (changed_in_this_transaction)
        ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                        errmsg("cannot PREPARE a transaction that changed flint_keys keys, merchants or scopes"),
                        errdetail("Key caches are invalidated when the change commits, which a prepared transaction "
                                  "does later, elsewhere.")));
}

} // namespace flint::pg
