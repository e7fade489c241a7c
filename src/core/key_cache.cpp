#include "key_cache.hpp"

#include <cstring>

namespace flint {

namespace {
enum Flags : uint8_t {
    kExists = 1 << 0, // a key (not a cached "no such key")
    kHasPrevious = 1 << 1,
    kHasPreviousExpiry = 1 << 2,
    kHasExpiry = 1 << 3,
    kRevoked = 1 << 4,
    kDisabled = 1 << 5,
    kSuspended = 1 << 6,
    kHasQuota = 1 << 7,
};
constexpr size_t kPrefixTail = 8; // display prefix after "fk_live_"/"fk_test_"
constexpr size_t kInitialSlots = 1024;
constexpr size_t kGrowthDivisor = 16; // grow by a sixteenth: at most ~6% more slots than the threshold needs
constexpr size_t kSearch = 512;       // slots the search for a free slot looks at, at most
} // namespace

// Plain data: copied, compared and thrown away with memcpy and epochs.
struct KeyCache::Slot {
    Uuid id;
    Uuid merchant_id;
    Digest secret_hash;
    Digest previous_hash;
    int64_t previous_expires;
    int64_t expires;
    uint64_t scope_bits[2]; // indexes into the scope dictionary
    char prefix_tail[kPrefixTail];
    int64_t quota_version;
    int32_t rate_limit; // 0: none
    int32_t rate_window_ms;
    int32_t merchant_rate_limit;
    int32_t merchant_rate_window_ms;
    uint32_t epoch; // the slot is empty unless this is the cache's epoch
    uint32_t last_use;
    uint8_t flags;
    uint8_t mode;
    uint8_t refill;
    uint8_t ipset; // 0: no allowlist, else index + 1
};
static_assert(KeyCache::kMaxScopes == 128, "scope_bits holds 128 bits");

const size_t KeyCache::kSlotBytes = sizeof(KeyCache::Slot);

KeyCache::~KeyCache() {
    if (slots_)
        free_(slots_, arg_);
    if (scopes_)
        free_(scopes_, arg_);
    if (ipsets_)
        free_(ipsets_, arg_);
}

void KeyCache::set_max_keys(size_t max_keys) {
    size_t sets = max_keys / kWays;
    if (sets > UINT32_MAX) // sets_of maps 32-bit hashes
        sets = UINT32_MAX;
    max_slots_ = (sets ? sets : 1) * kWays;
    if (nslots_ > max_slots_) { // shrink: start over at the new bound
        free_(slots_, arg_);
        slots_ = nullptr;
        nslots_ = 0;
        count_ = 0;
    }
}

void KeyCache::clear() {
    if (++epoch_ == 0) { // wrapped: no slot may look current
        if (slots_)
            std::memset(static_cast<void *>(slots_), 0, nslots_ * sizeof(Slot));
        epoch_ = 1;
    }
    count_ = 0;
    nscopes_ = 0;
    nipsets_ = 0;
}

void KeyCache::sets_of(const Uuid &id, size_t nsets, size_t set[2]) {
    uint64_t a, b;
    std::memcpy(&a, id.data(), 8);
    std::memcpy(&b, id.data() + 8, 8);
    // Key ids are random, but forged tokens choose theirs: mix all 16 bytes
    // (MurmurHash3's finalizer) so no id pattern piles up in one set.
    uint64_t h = a ^ (b * 0x9E3779B97F4A7C15ull);
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 33;
    // Each half of the hash picks a set (multiply-shift: nsets < 2^32).
    set[0] = static_cast<size_t>((h & 0xFFFFFFFFu) * nsets >> 32);
    set[1] = static_cast<size_t>((h >> 32) * nsets >> 32);
    if (set[1] == set[0] && nsets > 1)
        set[1] = set[0] + 1 == nsets ? 0 : set[0] + 1;
}

KeyCache::Slot *KeyCache::make_room(Slot *slots, size_t nsets, const Uuid &id, bool relocate) const {
    size_t set[2];
    sets_of(id, nsets, set);
    size_t nsets_of_id = set[0] == set[1] ? 1 : 2;
    for (size_t i = 0; i < nsets_of_id; ++i)
        for (size_t w = 0; w < kWays; ++w)
            if (slots[set[i] * kWays + w].epoch != epoch_)
                return &slots[set[i] * kWays + w];
    if (!relocate)
        return nullptr;
    // Breadth-first, from the id's full slots: a key that can move to a free
    // slot of its other set frees its own for the key before it in the chain,
    // back to a slot of the id's sets. The shortest chain, of a few moves.
    struct Step {
        size_t slot;
        size_t from; // the step whose key moves into this slot; SIZE_MAX at the id's sets
    };
    Step steps[kSearch];
    size_t nsteps = 0;
    for (size_t i = 0; i < nsets_of_id; ++i)
        for (size_t w = 0; w < kWays; ++w)
            steps[nsteps++] = {set[i] * kWays + w, SIZE_MAX};
    for (size_t k = 0; k < nsteps; ++k) {
        size_t its[2];
        sets_of(slots[steps[k].slot].id, nsets, its);
        size_t here = steps[k].slot / kWays;
        size_t other = here == its[0] ? its[1] : its[0];
        if (other == here)
            continue;
        for (size_t w = 0; w < kWays; ++w) {
            size_t free_slot = other * kWays + w;
            if (slots[free_slot].epoch == epoch_)
                continue;
            for (size_t s = k; s != SIZE_MAX; s = steps[s].from) { // move the chain's keys, last first
                slots[free_slot] = slots[steps[s].slot];
                free_slot = steps[s].slot;
            }
            return &slots[free_slot]; // in one of the id's sets
        }
        for (size_t w = 0; w < kWays && nsteps < kSearch; ++w) {
            size_t next = other * kWays + w;
            bool on_chain = false; // no slot twice in a chain (a shorter one would do)
            for (size_t s = k; s != SIZE_MAX && !on_chain; s = steps[s].from)
                on_chain = steps[s].slot == next;
            if (!on_chain)
                steps[nsteps++] = {next, k};
        }
    }
    return nullptr;
}

bool KeyCache::grow() {
    size_t step = (nslots_ / kGrowthDivisor + kWays - 1) / kWays * kWays;
    size_t want = nslots_ ? nslots_ + (step ? step : kWays) : kInitialSlots;
    if (want > max_slots_)
        want = max_slots_;
    if (want <= nslots_)
        return false;
    if (!scopes_) {
        scopes_ = static_cast<char(*)[kScopeBytes]>(alloc_(kMaxScopes * kScopeBytes, arg_));
        if (!scopes_)
            return false;
    }
    if (!ipsets_) {
        ipsets_ = static_cast<IpSet *>(alloc_(kMaxIpSets * sizeof(IpSet), arg_));
        if (!ipsets_)
            return false;
    }
    auto *bigger = static_cast<Slot *>(alloc_(want * sizeof(Slot), arg_));
    if (!bigger)
        return false;
    std::memset(static_cast<void *>(bigger), 0, want * sizeof(Slot)); // epoch 0: empty
    // Rehash the live entries, each into its sets of the new layout (moving
    // others as a new key would); one whose search fails is dropped (rare: the
    // new array is at most kMaxLoadPercent * 16 / 17 full).
    size_t kept = 0;
    for (size_t i = 0; i < nslots_; ++i) {
        const Slot &s = slots_[i];
        if (s.epoch != epoch_)
            continue;
        Slot *to = make_room(bigger, want / kWays, s.id, true);
        if (to) {
            *to = s;
            ++kept;
        }
    }
    if (slots_)
        free_(slots_, arg_);
    slots_ = bigger;
    nslots_ = want;
    count_ = kept;
    return true;
}

int KeyCache::scope_index(const std::string &scope) {
    if (scope.size() >= kScopeBytes)
        return -1;
    for (size_t i = 0; i < nscopes_; ++i)
        if (std::strcmp(scopes_[i], scope.c_str()) == 0)
            return static_cast<int>(i);
    if (nscopes_ == kMaxScopes)
        return -1;
    std::memcpy(scopes_[nscopes_], scope.c_str(), scope.size() + 1);
    return static_cast<int>(nscopes_++);
}

int KeyCache::ipset_index(const std::vector<Cidr> &ips) {
    if (ips.size() > kMaxIps)
        return -1;
    IpSet set{};
    set.count = static_cast<uint8_t>(ips.size());
    for (size_t i = 0; i < ips.size(); ++i)
        set.nets[i] = ips[i];
    for (size_t i = 0; i < nipsets_; ++i)
        if (std::memcmp(&ipsets_[i], &set, sizeof set) == 0)
            return static_cast<int>(i);
    if (nipsets_ == kMaxIpSets)
        return -1;
    ipsets_[nipsets_] = set;
    return static_cast<int>(nipsets_++);
}

bool KeyCache::find(const Uuid &id, KeyRecord *out, bool *exists) {
    if (!slots_)
        return false;
    size_t set[2];
    sets_of(id, nslots_ / kWays, set);
    for (size_t i = 0; i < 2 * kWays; ++i) {
        Slot &s = slots_[set[i / kWays] * kWays + i % kWays];
        if (s.epoch != epoch_ || s.id != id)
            continue;
        s.last_use = ++tick_;
        *exists = s.flags & kExists;
        if (!*exists)
            return true;
        out->id = s.id;
        out->merchant_id = s.merchant_id;
        out->mode = static_cast<Mode>(s.mode);
        out->display_prefix.assign(s.mode == static_cast<uint8_t>(Mode::live) ? "fk_live_" : "fk_test_");
        out->display_prefix.append(s.prefix_tail, kPrefixTail);
        out->secret_hash = s.secret_hash;
        out->previous_secret_hash.reset();
        if (s.flags & kHasPrevious)
            out->previous_secret_hash = s.previous_hash;
        out->previous_secret_expires_at.reset();
        if (s.flags & kHasPreviousExpiry)
            out->previous_secret_expires_at = s.previous_expires;
        out->expires_at.reset();
        if (s.flags & kHasExpiry)
            out->expires_at = s.expires;
        out->revoked = s.flags & kRevoked;
        out->disabled = s.flags & kDisabled;
        out->merchant_suspended = s.flags & kSuspended;
        out->rate_limit = s.rate_limit;
        out->rate_window_us = int64_t{s.rate_window_ms} * 1000;
        out->merchant_rate_limit = s.merchant_rate_limit;
        out->merchant_rate_window_us = int64_t{s.merchant_rate_window_ms} * 1000;
        out->has_quota = s.flags & kHasQuota;
        out->refill = static_cast<Refill>(s.refill);
        out->quota_version = s.quota_version;
        out->allowed_ips.clear();
        if (s.ipset)
            out->allowed_ips.assign(ipsets_[s.ipset - 1].nets, ipsets_[s.ipset - 1].nets + ipsets_[s.ipset - 1].count);
        size_t n = 0;
        for (size_t i = 0; i < kMaxScopes; ++i)
            if (s.scope_bits[i / 64] >> (i % 64) & 1) {
                if (n == out->scopes.size())
                    out->scopes.emplace_back();
                out->scopes[n++].assign(scopes_[i]); // short names: no allocation
            }
        out->scopes.resize(n);
        return true;
    }
    return false;
}

void KeyCache::erase(const Uuid &id) {
    if (!slots_)
        return;
    size_t set[2];
    sets_of(id, nslots_ / kWays, set);
    for (size_t i = 0; i < 2 * kWays; ++i) {
        Slot &s = slots_[set[i / kWays] * kWays + i % kWays];
        if (s.epoch == epoch_ && s.id == id) {
            s.epoch = 0; // empty: epochs start at 1
            --count_;
            return;
        }
    }
}

bool KeyCache::store(const Uuid &id, const KeyRecord *key) {
    if (!slots_ && !grow())
        return false;
    Slot entry{};
    entry.id = id;
    entry.epoch = epoch_;
    entry.last_use = ++tick_;
    if (key) {
        if (key->display_prefix.size() < 8 + kPrefixTail)
            return false;
        entry.flags = kExists | (key->previous_secret_hash ? kHasPrevious : 0) |
                      (key->previous_secret_expires_at ? kHasPreviousExpiry : 0) | (key->expires_at ? kHasExpiry : 0) |
                      (key->revoked ? kRevoked : 0) | (key->disabled ? kDisabled : 0) |
                      (key->merchant_suspended ? kSuspended : 0) | (key->has_quota ? kHasQuota : 0);
        // windows are whole milliseconds of at most a day (the table's bounds)
        entry.rate_limit = key->rate_limit;
        entry.rate_window_ms = static_cast<int32_t>(key->rate_window_us / 1000);
        entry.merchant_rate_limit = key->merchant_rate_limit;
        entry.merchant_rate_window_ms = static_cast<int32_t>(key->merchant_rate_window_us / 1000);
        if (key->rate_window_us % 1000 || key->merchant_rate_window_us % 1000 || key->rate_window_us > 86400000000LL ||
            key->merchant_rate_window_us > 86400000000LL)
            return false;
        entry.refill = static_cast<uint8_t>(key->refill);
        entry.quota_version = key->quota_version;
        if (!key->allowed_ips.empty()) {
            int i = ipset_index(key->allowed_ips);
            if (i < 0)
                return false; // serve this key uncached
            entry.ipset = static_cast<uint8_t>(i + 1);
        }
        entry.merchant_id = key->merchant_id;
        entry.mode = static_cast<uint8_t>(key->mode);
        std::memcpy(entry.prefix_tail, key->display_prefix.data() + 8, kPrefixTail);
        entry.secret_hash = key->secret_hash;
        if (key->previous_secret_hash)
            entry.previous_hash = *key->previous_secret_hash;
        entry.previous_expires = key->previous_secret_expires_at.value_or(0);
        entry.expires = key->expires_at.value_or(0);
        for (const std::string &scope : key->scopes) {
            int i = scope_index(scope);
            if (i < 0)
                return false; // dictionary full: serve this key uncached
            entry.scope_bits[i / 64] |= uint64_t{1} << (i % 64);
        }
    }
    size_t set[2];
    sets_of(id, nslots_ / kWays, set);
    for (size_t i = 0; i < 2 * kWays; ++i) { // the same key: replace it
        Slot &s = slots_[set[i / kWays] * kWays + i % kWays];
        if (s.epoch == epoch_ && s.id == id) {
            s = entry;
            return true;
        }
    }
    // A new key: grow first if it would take the load past the threshold
    // (when the memory is not there, go on at this size).
    if (over_load(count_ + 1) && nslots_ < max_slots_ && grow())
        sets_of(id, nslots_ / kWays, set);
    // Within the threshold, keys move to make room; past it (the cache at
    // its max) only a free slot of the id's own sets is taken.
    Slot *victim = make_room(slots_, nslots_ / kWays, id, !over_load(count_ + 1));
    if (victim) {
        ++count_;
    } else { // the least recently used of the id's sets
        victim = &slots_[set[0] * kWays];
        for (size_t i = 1; i < 2 * kWays; ++i) {
            Slot &s = slots_[set[i / kWays] * kWays + i % kWays];
            if (s.last_use < victim->last_use)
                victim = &s;
        }
    }
    *victim = entry;
    return true;
}

size_t KeyCache::bytes() const {
    return nslots_ * sizeof(Slot) + (scopes_ ? kMaxScopes * kScopeBytes : 0) +
           (ipsets_ ? kMaxIpSets * sizeof(IpSet) : 0);
}

} // namespace flint
