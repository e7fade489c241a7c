// The backend-local cache of keys verification has read: fixed-size slots in
// one block of memory the caller provides (a PostgreSQL memory context in the
// extension). Postgres-free.
//
// Layout: sets of kWays slots; a key may live in either of two sets its id
// hashes to (bucketized cuckoo hashing), so find() looks at 2 x kWays slots.
// A new key takes a free slot of its sets or, when both are full, a short
// chain of keys moves each to its other set to free one (a bounded
// breadth-first search). Only when no chain is found, or the cache is at its
// max and at least kMaxLoadPercent full, is a key evicted: the least recently
// used of its two sets, never the whole cache.
//
// Growth is by load: the slot array grows by a sixteenth (whole sets, up to
// the max) when a new key would make more than kMaxLoadPercent of the slots
// hold keys, and every key is rehashed into the new array. So once grown, the
// load stays between 95% * 16 / 17 (89%) and 95%: 185 to 197 bytes of slots
// per key (kSlotBytes 176), never the max's memory for a few keys.
//
// Memory: kSlotBytes per slot, plus one dictionary of the distinct scope
// strings the cached keys hold (at most kMaxScopes, kScopeBytes each) and one
// of their distinct IP allowlists (kMaxIpSets). A key the full dictionaries
// cannot describe is not cached (it is then read from the table each time):
// correct, only slower. While the array grows, the old one is held until its
// keys are rehashed.
//
// Invalidation is O(1): clear() bumps an epoch; slots of older epochs are empty.
#pragma once
#include <cstddef>
#include <cstdint>

#include "verify.hpp"

namespace flint {

class KeyCache {
  public:
    // Where the slots live: alloc returns nullptr when it cannot (the cache
    // then stays at its current size); free gives a block back.
    using AllocFn = void *(*)(size_t bytes, void *arg);
    using FreeFn = void (*)(void *block, void *arg);

    static constexpr size_t kWays = 4;
    static constexpr size_t kMaxLoadPercent = 95; // grow past this share of slots holding keys
    static constexpr size_t kMaxScopes = 128;
    static constexpr size_t kScopeBytes = 64; // catalog names are at most 63 characters
    static constexpr size_t kMaxIpSets = 32;  // distinct IP allowlists
    static constexpr size_t kMaxIps = 16;     // networks per allowlist (the table allows 16)

    KeyCache(AllocFn alloc, FreeFn free, void *arg) : alloc_(alloc), free_(free), arg_(arg) {}
    ~KeyCache();
    KeyCache(const KeyCache &) = delete;
    KeyCache &operator=(const KeyCache &) = delete;

    // At most this many keys (rounded down to whole sets, at least one set).
    // The slots grow by load (see above), up to this bound.
    void set_max_keys(size_t max_keys);
    // Forgets every key (and the scope dictionary) in O(1).
    void clear();

    // True when the id is cached: *exists says whether such a key exists and,
    // if so, *out is filled (its strings and vectors reuse their capacity).
    bool find(const Uuid &id, KeyRecord *out, bool *exists);
    // Caches a key, or that no key has this id (key == nullptr). False when
    // it could not be cached.
    bool store(const Uuid &id, const KeyRecord *key);
    // Forgets one id (cached or not): its next find misses.
    void erase(const Uuid &id);

    size_t size() const { return count_; } // keys cached now
    size_t capacity() const { return nslots_; }
    size_t bytes() const;           // memory held: slots and dictionary
    static const size_t kSlotBytes; // per slot

  private:
    struct Slot;
    // The two sets an id may live in (the same one only when there is one set).
    static void sets_of(const Uuid &id, size_t nsets, size_t set[2]);
    // A free slot for a new id in one of its sets of this array, made by
    // moving other keys to their other sets if relocate; nullptr when there
    // is none. The slot's old contents are to be overwritten.
    Slot *make_room(Slot *slots, size_t nsets, const Uuid &id, bool relocate) const;
    bool over_load(size_t keys) const { return keys * 100 > nslots_ * kMaxLoadPercent; }
    bool grow();
    int scope_index(const std::string &scope);
    int ipset_index(const std::vector<Cidr> &ips);
    struct IpSet {
        uint8_t count;
        Cidr nets[kMaxIps];
    };

    AllocFn alloc_;
    FreeFn free_;
    void *arg_;
    Slot *slots_ = nullptr;
    size_t nslots_ = 0;
    size_t count_ = 0; // slots of the current epoch
    size_t max_slots_ = 1024;
    uint32_t epoch_ = 1;
    uint32_t tick_ = 0;
    char (*scopes_)[kScopeBytes] = nullptr; // the dictionary, allocated with the first slots
    size_t nscopes_ = 0;
    IpSet *ipsets_ = nullptr; // the allowlists, allocated with the dictionary
    size_t nipsets_ = 0;
};

} // namespace flint
