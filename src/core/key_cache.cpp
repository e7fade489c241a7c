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
    max_slots_ = (sets ? sets : 1) * kWays;
    if (nslots_ > max_slots_) { // shrink: start over at the new bound
        free_(slots_, arg_);
        slots_ = nullptr;
        nslots_ = 0;
    }
}

void KeyCache::clear() {
    if (++epoch_ == 0) { // wrapped: no slot may look current
        if (slots_)
            std::memset(static_cast<void *>(slots_), 0, nslots_ * sizeof(Slot));
        epoch_ = 1;
    }
    nscopes_ = 0;
    nipsets_ = 0;
}

KeyCache::Slot *KeyCache::set_of(const Uuid &id, size_t nsets, Slot *slots) const {
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
    return slots + h % nsets * kWays;
}

bool KeyCache::grow() {
    size_t want = nslots_ ? nslots_ * 2 : kInitialSlots;
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
    std::memset(static_cast<void *>(bigger), 0, want * sizeof(Slot));
    // Move the live entries over; a full set in the new layout drops the rest.
    for (size_t i = 0; i < nslots_; ++i) {
        const Slot &s = slots_[i];
        if (s.epoch != epoch_)
            continue;
        Slot *set = set_of(s.id, want / kWays, bigger);
        for (size_t w = 0; w < kWays; ++w)
            if (set[w].epoch != epoch_) {
                set[w] = s;
                break;
            }
    }
    if (slots_)
        free_(slots_, arg_);
    slots_ = bigger;
    nslots_ = want;
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
    Slot *set = set_of(id, nslots_ / kWays, slots_);
    for (size_t w = 0; w < kWays; ++w) {
        Slot &s = set[w];
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
    for (int attempt = 0; attempt < 2; ++attempt) {
        Slot *set = set_of(id, nslots_ / kWays, slots_);
        Slot *victim = nullptr;
        for (size_t w = 0; w < kWays && !victim; ++w) // the same key: replace it
            if (set[w].epoch == epoch_ && set[w].id == id)
                victim = &set[w];
        for (size_t w = 0; w < kWays && !victim; ++w) // an empty slot
            if (set[w].epoch != epoch_)
                victim = &set[w];
        if (!victim) {
            // A full set in a cache below its bound: grow first, then evict.
            if (attempt == 0 && nslots_ < max_slots_ && grow())
                continue;
            victim = &set[0]; // the least recently used of the set
            for (size_t w = 1; w < kWays; ++w)
                if (set[w].last_use < victim->last_use)
                    victim = &set[w];
        }
        *victim = entry;
        return true;
    }
    return false;
}

size_t KeyCache::size() const {
    size_t n = 0;
    for (size_t i = 0; i < nslots_; ++i)
        n += slots_[i].epoch == epoch_;
    return n;
}

size_t KeyCache::bytes() const {
    return nslots_ * sizeof(Slot) + (scopes_ ? kMaxScopes * kScopeBytes : 0) +
           (ipsets_ ? kMaxIpSets * sizeof(IpSet) : 0);
}

} // namespace flint
