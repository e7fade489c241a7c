#include "traffic.hpp"

#include "datums.hpp"
#include "request_log.hpp"

#include "error_boundary.hpp"
#include "state.hpp"

extern "C" {
#include "executor/spi.h"
#include "access/xlog.h"
#include "storage/spin.h"
#include <netinet/in.h>
}

namespace flint::pg {

namespace {

constexpr int kPartitions = 64;

enum class Kind : uint8 { key = 1, merchant = 2 };

struct RateEntry {
    Uuid id;
    Uuid merchant;   // whose share the entry counts against (key entries)
    Kind kind;       // 0: empty
    int32 limit;     // the limit and window the bucket was filled for: a
    int64 window_us; // changed limit starts a fresh (full) bucket
    BucketState bucket;
};

struct QuotaEntry {
    Uuid id;
    Uuid merchant; // whose share the entry counts against
    bool used;
    bool requested;       // the worker is asked for more units
    bool exhausted;       // the table had no more for this version and period
    int64 available;      // leased units not yet spent
    int64 version;        // flint.api_keys.quota_version the units belong to
    int64 period;         // quota period start (0: no refill)
    int64 want;           // units the waiting call needs
    uint64 exhausted_gen; // keys_generation when found exhausted
};

struct RatePartition {
    slock_t lock;
    uint32 size;
    RateEntry entries[FLEXIBLE_ARRAY_MEMBER];
};

struct QuotaPartition {
    slock_t lock;
    uint32 size;
    QuotaEntry entries[FLEXIBLE_ARRAY_MEMBER];
};

// Fair shares: how many entries of each table every merchant holds. One
// slot per merchant that holds any; never full, since it has as many slots
// as both tables together. Its lock is taken only when an entry changes
// hands (a key's first limited call, a reused entry), never per call, and
// always after a partition's lock.
struct MerchantShare {
    Uuid id;
    bool ever_used; // the probe chain goes on past it
    uint32 rate_entries;
    uint32 quota_entries;
};

struct TrafficShared {
    pg_atomic_uint32 lease_requests; // entries with requested set, roughly
    Size rate_partition_bytes, quota_partition_bytes;
    slock_t shares_lock;
    uint32 shares_size;
    // Random at every start: which partition a key's entry lands in cannot be
    // computed from its id, so no merchant can pick keys that fill one
    // partition (every partition is shared by all merchants).
    uint64 salt;
};

TrafficShared *traffic = nullptr;
char *rate_base = nullptr;
char *quota_base = nullptr;
MerchantShare *shares = nullptr;

uint32 shares_slots() { return static_cast<uint32>(guc_rate_limit_slots) + static_cast<uint32>(guc_quota_slots); }

// A merchant's share of a table of `slots` entries: flint.merchant_share percent, at least one.
uint32 share_of(int slots) { return std::max<uint32>(1, static_cast<uint32>(int64(slots) * guc_merchant_share / 100)); }

uint32 per_partition(int total) { return static_cast<uint32>(std::max(16, (total + kPartitions - 1) / kPartitions)); }

uint64 hash_id(const Uuid &id, Kind kind) {
    uint64 a, b;
    std::memcpy(&a, id.data(), 8);
    std::memcpy(&b, id.data() + 8, 8);
    uint64 h = a ^ (b * 0x9E3779B97F4A7C15ull) ^ static_cast<uint64>(kind) ^ traffic->salt;
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    return h;
}

RatePartition *rate_partition(uint64 h) {
    return reinterpret_cast<RatePartition *>(rate_base + (h % kPartitions) * traffic->rate_partition_bytes);
}
QuotaPartition *quota_partition(uint64 h) {
    return reinterpret_cast<QuotaPartition *>(quota_base + (h % kPartitions) * traffic->quota_partition_bytes);
}

enum class Table { rate, quota };

uint64 merchant_hash(const Uuid &m) {
    uint64 a;
    std::memcpy(&a, m.data(), 8);
    return a * 0x9E3779B97F4A7C15ull;
}

// Under shares_lock: the merchant's counters (claimed if new).
MerchantShare *share_slot(const Uuid &merchant) {
    uint32 n = traffic->shares_size;
    MerchantShare *free_slot = nullptr;
    for (uint32 i = 0, j = static_cast<uint32>(merchant_hash(merchant) % n); i < n; ++i, j = (j + 1) % n) {
        MerchantShare &m = shares[j];
        if (m.ever_used && m.id == merchant)
            return &m;
        if (!free_slot && m.rate_entries == 0 && m.quota_entries == 0)
            free_slot = &m;
        if (!m.ever_used)
            break;
    }
    if (free_slot) { // never null: there are more slots than entries
        free_slot->id = merchant;
        free_slot->ever_used = true;
    }
    return free_slot;
}

uint32 &count_of(MerchantShare *m, Table t) { return t == Table::rate ? m->rate_entries : m->quota_entries; }

// Takes one entry of table `t` for `merchant`, unless it holds its share
// already; `from`, when given, is the merchant whose entry is reused (its
// count goes down in the same step).
bool take_share(Table t, const Uuid &merchant, const Uuid *from) {
    uint32 share = share_of(t == Table::rate ? guc_rate_limit_slots : guc_quota_slots);
    SpinLockAcquire(&traffic->shares_lock);
    bool ok = false;
    if (from && *from == merchant) {
        ok = true; // its own entry, reused: no change
    } else if (MerchantShare *m = share_slot(merchant); m && count_of(m, t) < share) {
        ++count_of(m, t);
        if (from)
            if (MerchantShare *old = share_slot(*from); old && count_of(old, t) > 0)
                --count_of(old, t);
        ok = true;
    }
    SpinLockRelease(&traffic->shares_lock);
    return ok;
}

void give_back_share(Table t, const Uuid &merchant) {
    SpinLockAcquire(&traffic->shares_lock);
    if (MerchantShare *m = share_slot(merchant); m && count_of(m, t) > 0)
        --count_of(m, t);
    SpinLockRelease(&traffic->shares_lock);
}

// Under the partition lock: the entry for id, claimed if new; nullptr when
// the partition is full of live buckets.
// *over_share is set when the merchant holds its share of the table (and
// none of its own entries here can be reused). A merchant's own bucket is
// one per merchant and counts against no share.
RateEntry *rate_entry(RatePartition *p, uint64 h, const Uuid &id, Kind kind, const Uuid &merchant, int64 now,
                      bool *over_share) {
    uint32 n = p->size;
    RateEntry *reusable = nullptr, *reusable_own = nullptr, *fresh = nullptr;
    for (uint32 i = 0, j = static_cast<uint32>((h / kPartitions) % n); i < n; ++i, j = (j + 1) % n) {
        RateEntry &e = p->entries[j];
        if (e.kind == kind && e.id == id)
            return &e;
        if (e.kind == Kind{}) { // never used: the probe chain ends here
            fresh = &e;
            break;
        }
        if (bucket_full(e.bucket, now, e.limit, e.window_us)) {
            if (!reusable)
                reusable = &e;
            if (!reusable_own && e.kind == Kind::key && e.merchant == merchant)
                reusable_own = &e;
        }
    }
    RateEntry *e = nullptr;
    if (kind == Kind::merchant) {
        e = fresh ? fresh : reusable;
        if (e && e != fresh && e->kind == Kind::key)
            give_back_share(Table::rate, e->merchant);
    } else if (fresh && take_share(Table::rate, merchant, nullptr)) {
        e = fresh;
    } else if (reusable_own) {
        e = reusable_own;
    } else if (reusable &&
               take_share(Table::rate, merchant, reusable->kind == Kind::key ? &reusable->merchant : nullptr)) {
        e = reusable;
    } else if (fresh || reusable) {
        *over_share = true;
    }
    if (e) {
        e->kind = kind;
        e->id = id;
        e->merchant = merchant;
        e->bucket = BucketState{};
    }
    return e;
}

// Takes a token for (id, kind); false when refused (retry_ms set) or the
// table is full (*full set).
bool take_token(const Uuid &id, Kind kind, const Uuid &merchant, int32 limit, int64 window, int64 now, int64 *retry_ms,
                bool *full, bool *over_share) {
    uint64 h = hash_id(id, kind);
    RatePartition *p = rate_partition(h);
    SpinLockAcquire(&p->lock);
    RateEntry *e = rate_entry(p, h, id, kind, merchant, now, over_share);
    bool ok = false;
    *full = e == nullptr && !*over_share;
    if (e) {
        if (e->limit != limit || e->window_us != window) {
            // A changed limit keeps what was spent (a key must not reset its
            // bucket by changing its window).
            bucket_change_limit(e->bucket, now, e->limit, e->window_us, limit, window);
            e->limit = limit;
            e->window_us = window;
        }
        ok = bucket_take(e->bucket, now, limit, window, retry_ms);
    }
    SpinLockRelease(&p->lock);
    return ok;
}

void refund_token(const Uuid &id, Kind kind, int32 limit, int64 window) {
    uint64 h = hash_id(id, kind);
    RatePartition *p = rate_partition(h);
    SpinLockAcquire(&p->lock);
    for (uint32 i = 0; i < p->size; ++i)
        if (p->entries[i].kind == kind && p->entries[i].id == id) {
            bucket_refund(p->entries[i].bucket, limit, window);
            break;
        }
    SpinLockRelease(&p->lock);
}

QuotaEntry *quota_entry(QuotaPartition *p, uint64 h, const Uuid &id, const Uuid &merchant, bool *over_share) {
    uint32 n = p->size;
    QuotaEntry *reusable = nullptr, *reusable_own = nullptr;
    for (uint32 i = 0, j = static_cast<uint32>((h / kPartitions) % n); i < n; ++i, j = (j + 1) % n) {
        QuotaEntry &e = p->entries[j];
        if (e.used && e.id == id)
            return &e;
        if (!e.used) {
            if (!reusable)
                reusable = &e;
            if (e.version == 0) // never used: the chain ends here
                break;
        } else if (!e.requested && e.available == 0) {
            // an entry holding no units: forgetting it forfeits nothing
            if (!reusable)
                reusable = &e;
            if (!reusable_own && e.merchant == merchant)
                reusable_own = &e;
        }
    }
    QuotaEntry *e = nullptr;
    if (reusable_own) {
        e = reusable_own;
    } else if (reusable && take_share(Table::quota, merchant, reusable->used ? &reusable->merchant : nullptr)) {
        e = reusable;
    } else if (reusable) {
        *over_share = true;
    }
    if (e) {
        *e = QuotaEntry{};
        e->used = true;
        e->id = id;
        e->merchant = merchant;
        e->version = -1;
    }
    return e;
}

enum class Spend { ok, ok_top_up, exhausted, ask, full, over_share };

// One attempt to spend `cost` units from this server's lease.
Spend try_spend(const KeyRecord &key, int32 cost, int64 period) {
    uint64 h = hash_id(key.id, Kind::key);
    QuotaPartition *p = quota_partition(h);
    uint64 generation = pg_atomic_read_u64(&shared_state->keys_generation);
    SpinLockAcquire(&p->lock);
    bool over_share = false;
    QuotaEntry *e = quota_entry(p, h, key.id, key.merchant_id, &over_share);
    Spend result = over_share ? Spend::over_share : Spend::full;
    if (e) {
        if (e->version != key.quota_version || e->period != period) {
            // another quota, or a new period: units of the old one are never spent
            e->version = key.quota_version;
            e->period = period;
            e->available = 0;
            e->exhausted = false;
            e->requested = false;
        }
        if (e->exhausted && e->exhausted_gen != generation)
            e->exhausted = false; // key data changed since: ask the table again
        if (e->available >= cost) {
            e->available -= cost;
            result = Spend::ok;
            // Running low: ask for the next lease now, so that callers rarely wait for one.
            if (e->available < guc_quota_lease / 2 && !e->requested && !e->exhausted) {
                e->requested = true;
                e->want = 1;
                pg_atomic_fetch_add_u32(&traffic->lease_requests, 1);
                result = Spend::ok_top_up;
            }
        } else if (e->exhausted && e->want >= cost) {
            result = Spend::exhausted;
        } else {
            e->exhausted = false;
            e->want = e->requested ? std::max<int64>(e->want, cost) : cost;
            if (!e->requested) {
                e->requested = true;
                pg_atomic_fetch_add_u32(&traffic->lease_requests, 1);
            }
            result = Spend::ask;
        }
    }
    SpinLockRelease(&p->lock);
    return result;
}

constexpr const char *kRateShareFull =
    "This merchant's keys hold their whole share of this server's rate-limit table (flint.merchant_share percent "
    "of flint.rate_limit_slots); a bucket comes back once its key has not been called for a full window.";
constexpr const char *kQuotaShareFull =
    "This merchant's keys hold their whole share of this server's quota table (flint.merchant_share percent of "
    "flint.quota_slots); an entry comes back once its leased units are spent.";

} // namespace

Size traffic_shmem_size() {
    Size size = MAXALIGN(sizeof(TrafficShared));
    size = add_size(size, MAXALIGN(mul_size(shares_slots(), sizeof(MerchantShare))));
    size = add_size(size, mul_size(kPartitions, MAXALIGN(offsetof(RatePartition, entries) +
                                                         per_partition(guc_rate_limit_slots) * sizeof(RateEntry))));
    size = add_size(size, mul_size(kPartitions, MAXALIGN(offsetof(QuotaPartition, entries) +
                                                         per_partition(guc_quota_slots) * sizeof(QuotaEntry))));
    return size;
}

void traffic_shmem_init(void *memory, bool found) {
    traffic = static_cast<TrafficShared *>(memory);
    Size rate_bytes =
        MAXALIGN(offsetof(RatePartition, entries) + per_partition(guc_rate_limit_slots) * sizeof(RateEntry));
    Size quota_bytes =
        MAXALIGN(offsetof(QuotaPartition, entries) + per_partition(guc_quota_slots) * sizeof(QuotaEntry));
    shares = reinterpret_cast<MerchantShare *>(static_cast<char *>(memory) + MAXALIGN(sizeof(TrafficShared)));
    rate_base = reinterpret_cast<char *>(shares) + MAXALIGN(shares_slots() * sizeof(MerchantShare));
    quota_base = rate_base + kPartitions * rate_bytes;
    if (found)
        return;
    std::memset(memory, 0, traffic_shmem_size());
    pg_atomic_init_u32(&traffic->lease_requests, 0);
    traffic->rate_partition_bytes = rate_bytes;
    traffic->quota_partition_bytes = quota_bytes;
    SpinLockInit(&traffic->shares_lock);
    traffic->shares_size = shares_slots();
    if (!pg_strong_random(&traffic->salt, sizeof traffic->salt))
        traffic->salt = static_cast<uint64>(GetCurrentTimestamp()) * 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < kPartitions; ++i) {
        auto *r = reinterpret_cast<RatePartition *>(rate_base + i * rate_bytes);
        SpinLockInit(&r->lock);
        r->size = per_partition(guc_rate_limit_slots);
        auto *q = reinterpret_cast<QuotaPartition *>(quota_base + i * quota_bytes);
        SpinLockInit(&q->lock);
        q->size = per_partition(guc_quota_slots);
    }
}

TrafficVerdict check_traffic(const KeyRecord &key, int32 cost, TimestampTz now) {
    TrafficVerdict v;
    if (key.rate_limit == 0 && key.merchant_rate_limit == 0 && (!key.has_quota || cost == 0))
        return v; // no limits: no shared state touched
    bool full = false, over_share = false;
    bool took_key = false, took_merchant = false;
    if (key.rate_limit > 0) {
        if (!take_token(key.id, Kind::key, key.merchant_id, key.rate_limit, key.rate_window_us, now, &v.retry_after_ms,
                        &full, &over_share)) {
            v.code = Code::rate_limited;
            v.detail = over_share ? kRateShareFull
                       : full     ? "The rate-limit table of this server is full (flint.rate_limit_slots)."
                                  : "retry after " + std::to_string(v.retry_after_ms) + " ms";
            return v;
        }
        took_key = true;
    }
    if (key.merchant_rate_limit > 0) {
        if (!take_token(key.merchant_id, Kind::merchant, key.merchant_id, key.merchant_rate_limit,
                        key.merchant_rate_window_us, now, &v.retry_after_ms, &full, &over_share)) {
            if (took_key)
                refund_token(key.id, Kind::key, key.rate_limit, key.rate_window_us);
            v.code = Code::rate_limited;
            v.detail = full ? "The rate-limit table of this server is full (flint.rate_limit_slots)."
                            : "retry after " + std::to_string(v.retry_after_ms) + " ms (the merchant's rate limit)";
            return v;
        }
        took_merchant = true;
    }
    if (key.has_quota && cost > 0 && RecoveryInProgress()) {
        // Leasing writes to flint.api_keys: a standby cannot, so it never spends a quota.
        if (took_key)
            refund_token(key.id, Kind::key, key.rate_limit, key.rate_window_us);
        if (took_merchant)
            refund_token(key.merchant_id, Kind::merchant, key.merchant_rate_limit, key.merchant_rate_window_us);
        v.code = Code::usage_exceeded;
        v.detail = "A key with a quota is verified on the primary only: this server is a standby.";
        return v;
    }
    if (key.has_quota && cost > 0) {
        int64 period = quota_period_start(key.refill, now);
        TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), guc_log_queue_wait_ms);
        Spend s;
        while ((s = try_spend(key, cost, period)) == Spend::ask) {
            if (GetCurrentTimestamp() >= deadline)
                break;
            wake_log_worker();
            pg_guard([] {
                (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 1, PG_WAIT_EXTENSION);
                ResetLatch(MyLatch);
                CHECK_FOR_INTERRUPTS();
            });
        }
        if (s == Spend::ok_top_up) {
            wake_log_worker();
            s = Spend::ok;
        }
        if (s != Spend::ok) {
            if (took_key)
                refund_token(key.id, Kind::key, key.rate_limit, key.rate_window_us);
            if (took_merchant)
                refund_token(key.merchant_id, Kind::merchant, key.merchant_rate_limit, key.merchant_rate_window_us);
            v.code = Code::usage_exceeded;
            v.detail =
                s == Spend::exhausted    ? "The call costs " + std::to_string(cost) + " and the quota has less left."
                : s == Spend::full       ? "The quota table of this server is full (flint.quota_slots)."
                : s == Spend::over_share ? kQuotaShareFull
                                         : "No quota units could be leased in time (is the log worker running?).";
        }
    }
    return v;
}

std::vector<LeaseRequest> pending_lease_requests() {
    std::vector<LeaseRequest> out;
    if (pg_atomic_exchange_u32(&traffic->lease_requests, 0) == 0)
        return out;
    // From another partition each time: the worker serves the first 1,000
    // requests a pass, and no partition's keys may always come last.
    static int first = 0;
    first = (first + 1) % kPartitions;
    for (int i = 0; i < kPartitions; ++i) {
        int part = (first + i) % kPartitions;
        auto *p = reinterpret_cast<QuotaPartition *>(quota_base + part * traffic->quota_partition_bytes);
        SpinLockAcquire(&p->lock);
        for (uint32 i = 0; i < p->size; ++i) {
            const QuotaEntry &e = p->entries[i];
            // Never more held than flint.quota_lease (or one call's cost):
            // a top-up brings the lease back to quota_lease, no further.
            if (e.used && e.requested)
                out.push_back({e.id, e.version, e.period,
                               std::max<int64>(e.want - e.available, guc_quota_lease - e.available), e.want});
        }
        SpinLockRelease(&p->lock);
    }
    return out;
}

void apply_lease(const LeaseRequest &r, int64 granted) {
    uint64 h = hash_id(r.id, Kind::key);
    QuotaPartition *p = quota_partition(h);
    uint64 generation = pg_atomic_read_u64(&shared_state->keys_generation);
    SpinLockAcquire(&p->lock);
    for (uint32 i = 0; i < p->size; ++i) {
        QuotaEntry &e = p->entries[i];
        if (!e.used || e.id != r.id)
            continue;
        if (e.requested && e.version == r.version && e.period == r.period) {
            e.requested = false;
            if (granted > 0)
                e.available += granted;
            if (e.available < r.needed) { // the table had less than the waiting call needs
                e.exhausted = true;
                e.exhausted_gen = generation;
            } else if (granted == 0) {
                // A top-up found the table empty: spend what is held, and ask
                // again only when the key changes or a new period begins
                // (not once per call, which would cost the worker a
                // transaction per call).
                e.exhausted = true;
                e.exhausted_gen = generation;
                e.want = 1;
            }
        }
        break;
    }
    SpinLockRelease(&p->lock);
}

void lock_lease_keys_unsafe(const std::vector<LeaseRequest> &requests, std::vector<bool> *served) {
    // Locked now, or gone (the lease then answers -1); a key row someone else
    // holds is skipped.
    static SPIPlanPtr plan = nullptr;
    if (!plan) {
        Oid types[1] = {UUIDARRAYOID};
        SPIPlanPtr p =
            SPI_prepare("WITH locked AS MATERIALIZED (SELECT k.id FROM flint.api_keys k WHERE k.id = ANY ($1) "
                        "                             FOR UPDATE SKIP LOCKED) "
                        "SELECT id FROM locked UNION ALL "
                        "SELECT i FROM unnest($1) AS i WHERE NOT EXISTS (SELECT FROM flint.api_keys k WHERE k.id = i)",
                        1, types);
        if (!p)
            elog(ERROR, "flint_keys: could not prepare the quota lease lock");
        SPI_keepplan(p);
        plan = p;
    }
    Uuid *ids = static_cast<Uuid *>(palloc(sizeof(Uuid) * std::max<size_t>(requests.size(), 1)));
    for (size_t i = 0; i < requests.size(); ++i)
        ids[i] = requests[i].id;
    Datum args[1] = {uuid_array_datum(ids, static_cast<int>(requests.size()))};
    if (SPI_execute_plan(plan, args, nullptr, false, 0) != SPI_OK_SELECT)
        elog(ERROR, "flint_keys: quota lease lock failed");
    for (uint64 row = 0; row < SPI_processed; ++row) {
        bool isnull;
        Datum d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, 1, &isnull);
        for (size_t i = 0; i < requests.size(); ++i)
            if (std::memcmp(requests[i].id.data(), DatumGetUUIDP(d)->data, 16) == 0)
                (*served)[i] = true;
    }
}

void retry_leases_later() { pg_atomic_fetch_add_u32(&traffic->lease_requests, 1); }

void lease_quota_unsafe(const LeaseRequest &r, int64 *granted) {
    static SPIPlanPtr plan = nullptr;
    if (!plan) {
        Oid types[4] = {UUIDOID, INT8OID, TIMESTAMPTZOID, INT8OID};
        SPIPlanPtr p = SPI_prepare("SELECT flint._lease_quota($1, $2, $3, $4)", 4, types);
        if (!p)
            elog(ERROR, "flint_keys: could not prepare the quota lease");
        SPI_keepplan(p);
        plan = p;
    }
    pg_uuid_t *id = static_cast<pg_uuid_t *>(palloc(sizeof(pg_uuid_t)));
    std::memcpy(id->data, r.id.data(), 16);
    Datum args[4] = {UUIDPGetDatum(id), Int64GetDatum(r.version), TimestampTzGetDatum(r.period), Int64GetDatum(r.want)};
    char nulls[5] = {' ', ' ', static_cast<char>(r.period ? ' ' : 'n'), ' ', '\0'};
    if (SPI_execute_plan(plan, args, nulls, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
        elog(ERROR, "flint_keys: quota lease failed");
    bool isnull;
    Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
    *granted = isnull ? -1 : DatumGetInt64(d);
}

IpAddress connection_address() {
    // The peer's address in binary, once per backend; none for Unix sockets.
    static std::optional<IpAddress> known;
    if (!known) {
        IpAddress ip;
        const auto *sa = MyProcPort ? reinterpret_cast<const struct sockaddr *>(&MyProcPort->raddr.addr) : nullptr;
        if (sa && sa->sa_family == AF_INET) {
            ip.family = 4;
            std::memcpy(ip.bytes, &reinterpret_cast<const struct sockaddr_in *>(sa)->sin_addr, 4);
        } else if (sa && sa->sa_family == AF_INET6) {
            ip.family = 6;
            std::memcpy(ip.bytes, &reinterpret_cast<const struct sockaddr_in6 *>(sa)->sin6_addr, 16);
        }
        known = ip;
    }
    return *known;
}

int64 leased_units(const Uuid &id, int64 version, int64 period) {
    if (!traffic)
        return 0;
    uint64 h = hash_id(id, Kind::key);
    QuotaPartition *p = quota_partition(h);
    int64 units = 0;
    SpinLockAcquire(&p->lock);
    for (uint32 i = 0; i < p->size; ++i) {
        const QuotaEntry &e = p->entries[i];
        if (e.used && e.id == id) {
            if (e.version == version && e.period == period) // units of an older quota or period are void
                units = e.available;
            break;
        }
    }
    SpinLockRelease(&p->lock);
    return units;
}

// This server's bucket for (id, kind) at `now`, read without taking (a key
// with no entry has a full bucket: entries start full).
BucketReading read_bucket(const Uuid &id, Kind kind, int32 limit, int64 window, int64 now) {
    BucketState state;
    if (traffic) {
        uint64 h = hash_id(id, kind);
        RatePartition *p = rate_partition(h);
        SpinLockAcquire(&p->lock);
        for (uint32 i = 0; i < p->size; ++i) {
            const RateEntry &e = p->entries[i];
            if (e.kind == kind && e.id == id) {
                state = e.bucket;
                if (e.limit != limit || e.window_us != window) // as the next take would see it
                    bucket_change_limit(state, now, e.limit, e.window_us, limit, window);
                break;
            }
        }
        SpinLockRelease(&p->lock);
    }
    return bucket_read(state, now, limit, window);
}

namespace {

// flint._rate_bucket(id uuid, merchant_wide boolean, rate_limit integer,
// rate_window interval): {tokens left, microseconds until full} of this
// server's bucket for a key (or a merchant's shared limit).
Datum rate_bucket_body(FunctionCallInfo fcinfo) {
    if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
        PG_RETURN_NULL();
    Uuid id;
    std::memcpy(id.data(), PG_GETARG_UUID_P(0)->data, 16);
    const Kind kind = PG_GETARG_BOOL(1) ? Kind::merchant : Kind::key;
    const BucketReading r =
        read_bucket(id, kind, PG_GETARG_INT32(2), interval_us(PG_GETARG_DATUM(3)), GetCurrentTimestamp());
    Datum items[2] = {Int64GetDatum(r.tokens), Int64GetDatum(r.full_in_us)};
    PG_RETURN_ARRAYTYPE_P(construct_array(items, 2, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

// flint._leased_units(key_id uuid, version bigint, period timestamptz): the
// units of that quota version and period this server holds and has not spent.
Datum leased_units_body(FunctionCallInfo fcinfo) {
    if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
        PG_RETURN_INT64(0);
    Uuid id;
    std::memcpy(id.data(), PG_GETARG_UUID_P(0)->data, 16);
    const int64 period = PG_ARGISNULL(2) ? 0 : PG_GETARG_TIMESTAMPTZ(2);
    PG_RETURN_INT64(leased_units(id, PG_GETARG_INT64(1), period));
}

} // namespace
} // namespace flint::pg

using namespace flint::pg;
FLINT_SQL_FUNCTION(flint_leased_units, leased_units_body)
FLINT_SQL_FUNCTION(flint_rate_bucket, rate_bucket_body)
