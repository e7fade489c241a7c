// Traffic controls in shared memory: the token buckets of key and merchant
// rate limits, and the quota units this server has leased from flint.api_keys.
//
// Both tables are fixed-size, split in kPartitions partitions, each behind
// its own spinlock held only for a probe of that partition. A key without
// limits never touches them. A rate-limit entry whose bucket is full again
// is free to reuse (forgetting it changes nothing); when no entry can be
// had the call fails closed (rate_limited / usage_exceeded, the DETAIL names
// the full table). State is per server and starts afresh at a restart.
//
// Quotas: units are spent only from this server's lease. When the lease is
// short the backend asks the log worker, which takes more units from the
// table in a committed transaction (flint._lease_quota) and adds them here;
// the backend waits for it at most flint.log_queue_wait. A server holds at
// most max(flint.quota_lease, one call's cost) units of a key (a top-up,
// asked for when half is spent, refills to flint.quota_lease): a crash
// forfeits at most that, plus the cost of the calls in flight, never more.
#pragma once
#include "pg_includes.hpp"

#include "verify.hpp"

namespace flint::pg {

struct TrafficVerdict {
    Code code = Code::ok;
    int64 retry_after_ms = 0; // rate_limited
    std::string detail;
};

Size traffic_shmem_size();
void traffic_shmem_init(void *memory, bool found);

// Key rate, merchant rate, then quota (cost units; 0 is a free check). A
// refused call consumes no rate and no quota.
TrafficVerdict check_traffic(const KeyRecord &key, int32 cost, TimestampTz now);

// For the log worker: the entries waiting for units (want is at least
// flint.quota_lease), the lease itself (one SPI call in the worker's
// transaction) and handing its result to the waiting entry.
struct LeaseRequest {
    Uuid id;
    int64 version, period;
    int64 want;   // units to lease
    int64 needed; // what the waiting call costs
};
std::vector<LeaseRequest> pending_lease_requests();
// Locks the requests' key rows, skipping those another session holds:
// served[i] is set for the locked ones (and for keys that are gone).
void lock_lease_keys_unsafe(const std::vector<LeaseRequest> &requests, std::vector<bool> *served);
void lease_quota_unsafe(const LeaseRequest &r, int64 *granted); // granted -1: the quota changed or is gone
void apply_lease(const LeaseRequest &r, int64 granted);
// Units of this quota version and period (0: no refill) this server holds
// for the key and has not spent: key_info.remaining adds them (they are
// taken from flint.api_keys.remaining when leased, not when spent).
int64 leased_units(const Uuid &id, int64 version, int64 period);
// The lease transaction failed (a lock timeout): look at the requests again next time.
void retry_leases_later();

// The connection's client address (family 0 over a Unix socket): what an
// IP allowlist checks when the caller passes no client_ip, and what the
// request log records.
IpAddress connection_address();

} // namespace flint::pg
