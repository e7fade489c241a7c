// Reading keys, merchants and the scope catalog for verification.
//
// Reads use the latest committed state (plus this transaction's own changes),
// never the transaction's snapshot: a key revoked and committed elsewhere must
// fail the very next verification, even inside a REPEATABLE READ transaction.
//
// A backend-local cache (key_cache.hpp: fixed-size slots in the memory
// context "flint_keys key cache", at most flint.key_cache_size keys, LRU
// eviction per set) holds what was read. It is correct by construction:
// every commit that changes api_keys, merchants or scopes bumps a shared
// generation counter after the commit is visible (the trigger in the install
// script plus the commit callback here), and the cache is dropped whenever the
// counter differs from the one read before the cache was filled. A transaction
// that changed those tables itself bypasses the cache until it ends.
#pragma once
#include "pg_includes.hpp"

#include "verify.hpp"

namespace flint::pg {

// The key with this id, or nullptr, and (when `catalog` is given) the scope
// catalog, both from one look at the cache, so neither can be dropped under
// the other. Valid until the next call into the key store.
const KeyRecord *find_key(const Uuid &id, const std::vector<std::string> **catalog = nullptr);

// Every scope name in flint.scopes.
const std::vector<std::string> &scope_catalog();

// Called by the invalidation trigger: this transaction changed key data.
void note_keys_changed(Oid relid);
// The same for a change that concerns only these keys (a role's holders):
// other backends forget just them at commit.
void note_keys_changed_for(Oid relid, const std::vector<Uuid> &ids);

// _PG_init: registers the key store's transaction callbacks.
void key_store_init();

// Transaction end: publish the change (commit) and drop what this transaction saw.
void key_store_at_commit();
void key_store_at_abort();
void key_store_before_prepare();

} // namespace flint::pg
