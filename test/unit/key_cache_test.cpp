#include "key_cache.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <vector>

using namespace flint;

namespace {
struct Counter {
    size_t allocated = 0;
    size_t fail_after = SIZE_MAX; // bytes: allocations beyond fail
};
void *counting_alloc(size_t bytes, void *arg) {
    auto *c = static_cast<Counter *>(arg);
    if (c->allocated + bytes > c->fail_after)
        return nullptr;
    c->allocated += bytes;
    return std::malloc(bytes);
}
void counting_free(void *p, void *) { std::free(p); }

Uuid id_of(uint32_t n) {
    Uuid id{};
    std::memcpy(id.data() + 4, &n, sizeof n); // non-random ids still spread over the sets
    return id;
}
KeyRecord key_of(uint32_t n) {
    KeyRecord k;
    k.id = id_of(n);
    k.merchant_id = id_of(n + 1000000);
    k.mode = n % 2 ? Mode::test : Mode::live;
    k.display_prefix = std::string(n % 2 ? "fk_test_" : "fk_live_") + "Ab3dEf" + std::to_string(n % 10) + "z";
    k.secret_hash[0] = static_cast<uint8_t>(n);
    if (n % 3 == 0) {
        k.previous_secret_hash = Digest{};
        k.previous_secret_hash->at(1) = 7;
        k.previous_secret_expires_at = 12345;
    }
    if (n % 5 == 0)
        k.expires_at = 999;
    k.revoked = n % 7 == 0;
    k.disabled = n % 11 == 0;
    k.merchant_suspended = n % 13 == 0;
    k.scopes = {"payments:read", n % 2 ? "refunds:*" : "keys:write"};
    if (n % 4 == 0) {
        k.rate_limit = static_cast<int32_t>(n);
        k.rate_window_us = 60000000;
        k.merchant_rate_limit = 7;
        k.merchant_rate_window_us = 1000000;
        k.has_quota = true;
        k.refill = Refill::month;
        k.quota_version = n * 3;
        Cidr net;
        net.family = 4;
        net.bits = 24;
        net.bytes[0] = static_cast<uint8_t>(n % 3);
        k.allowed_ips = {net};
    }
    return k;
}

// Distinct random ids, as key ids are (gen_random_uuid()).
std::vector<Uuid> random_ids(size_t count, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::set<Uuid> seen;
    std::vector<Uuid> ids;
    while (ids.size() < count) {
        Uuid id;
        uint64_t half[2] = {rng(), rng()};
        std::memcpy(id.data(), half, sizeof half);
        if (seen.insert(id).second)
            ids.push_back(id);
    }
    return ids;
}
} // namespace

TEST(KeyCache, RoundTripsEveryField) {
    Counter c;
    KeyCache cache(counting_alloc, counting_free, &c);
    for (uint32_t n = 1; n <= 30; ++n) {
        KeyRecord in = key_of(n);
        ASSERT_TRUE(cache.store(in.id, &in));
        KeyRecord out;
        bool exists = false;
        ASSERT_TRUE(cache.find(in.id, &out, &exists));
        ASSERT_TRUE(exists);
        EXPECT_EQ(out.id, in.id);
        EXPECT_EQ(out.merchant_id, in.merchant_id);
        EXPECT_EQ(out.mode, in.mode);
        EXPECT_EQ(out.display_prefix, in.display_prefix);
        EXPECT_EQ(out.secret_hash, in.secret_hash);
        EXPECT_EQ(out.previous_secret_hash, in.previous_secret_hash);
        EXPECT_EQ(out.previous_secret_expires_at, in.previous_secret_expires_at);
        EXPECT_EQ(out.expires_at, in.expires_at);
        EXPECT_EQ(out.revoked, in.revoked);
        EXPECT_EQ(out.disabled, in.disabled);
        EXPECT_EQ(out.merchant_suspended, in.merchant_suspended);
        EXPECT_EQ(out.scopes, in.scopes);
        EXPECT_EQ(out.rate_limit, in.rate_limit);
        EXPECT_EQ(out.rate_window_us, in.rate_window_us);
        EXPECT_EQ(out.merchant_rate_limit, in.merchant_rate_limit);
        EXPECT_EQ(out.merchant_rate_window_us, in.merchant_rate_window_us);
        EXPECT_EQ(out.has_quota, in.has_quota);
        EXPECT_EQ(out.refill, in.refill);
        EXPECT_EQ(out.quota_version, in.quota_version);
        ASSERT_EQ(out.allowed_ips.size(), in.allowed_ips.size());
        for (size_t i = 0; i < in.allowed_ips.size(); ++i)
            EXPECT_EQ(std::memcmp(&out.allowed_ips[i], &in.allowed_ips[i], sizeof(Cidr)), 0);
    }
}

TEST(KeyCache, RemembersThatAKeyDoesNotExist) {
    Counter c;
    KeyCache cache(counting_alloc, counting_free, &c);
    KeyRecord out;
    bool exists = true;
    EXPECT_FALSE(cache.find(id_of(5), &out, &exists)) << "nothing cached yet";
    ASSERT_TRUE(cache.store(id_of(5), nullptr));
    ASSERT_TRUE(cache.find(id_of(5), &out, &exists));
    EXPECT_FALSE(exists);
}

TEST(KeyCache, ClearForgetsEverythingAtOnce) {
    Counter c;
    KeyCache cache(counting_alloc, counting_free, &c);
    KeyRecord k = key_of(1);
    cache.store(k.id, &k);
    cache.clear();
    KeyRecord out;
    bool exists;
    EXPECT_FALSE(cache.find(k.id, &out, &exists));
    EXPECT_EQ(cache.size(), 0u);
}

TEST(KeyCache, BoundedAndEvictsOneKeyNotAll) {
    Counter c;
    KeyCache cache(counting_alloc, counting_free, &c);
    cache.set_max_keys(1000);
    for (uint32_t n = 1; n <= 5000; ++n) {
        KeyRecord k = key_of(n);
        ASSERT_TRUE(cache.store(k.id, &k));
    }
    EXPECT_LE(cache.capacity(), 1000u);
    EXPECT_GT(cache.size(), 900u) << "a full cache stays nearly full: it evicts, it does not flush";
    EXPECT_LE(cache.size(), 1000u);
    // The most recent keys are there; the oldest were evicted.
    KeyRecord out;
    bool exists;
    size_t recent = 0;
    for (uint32_t n = 4901; n <= 5000; ++n)
        recent += cache.find(id_of(n), &out, &exists);
    EXPECT_GE(recent, 95u);
}

TEST(KeyCache, HotKeysSurviveAScan) {
    Counter c;
    KeyCache cache(counting_alloc, counting_free, &c);
    cache.set_max_keys(400);
    KeyRecord hot = key_of(1);
    cache.store(hot.id, &hot);
    KeyRecord out;
    bool exists;
    for (uint32_t n = 2; n <= 2000; ++n) {
        KeyRecord k = key_of(n);
        cache.store(k.id, &k);
        ASSERT_TRUE(cache.find(hot.id, &out, &exists)) << "used at every step, never the LRU of its set: " << n;
    }
}

TEST(KeyCache, UnderTwoHundredBytesPerKey) {
    Counter c;
    KeyCache cache(counting_alloc, counting_free, &c);
    cache.set_max_keys(100000);
    for (uint32_t n = 1; n <= 100000; ++n) {
        KeyRecord k = key_of(n);
        cache.store(k.id, &k);
    }
    EXPECT_LE(KeyCache::kSlotBytes, 184u);
    EXPECT_LT(cache.bytes() / 100000.0, 200.0);
    // At its max the cache takes keys into free slots of their two sets, and
    // moves keys to make room up to 95% full; past that a new key evicts one
    // (about 96% occupancy here), never the whole cache.
    EXPECT_GT(cache.size(), 94000u);
}

TEST(KeyCache, OutOfMemoryOrScopesDegradeToUncached) {
    Counter c;
    c.fail_after = 0;
    KeyCache none(counting_alloc, counting_free, &c);
    KeyRecord k = key_of(1);
    EXPECT_FALSE(none.store(k.id, &k)) << "no memory: the key is simply not cached";
    Counter c2;
    KeyCache cache(counting_alloc, counting_free, &c2);
    for (uint32_t n = 0; n < KeyCache::kMaxScopes; ++n) {
        KeyRecord many = key_of(n + 10);
        many.scopes = {"res" + std::to_string(n) + ":read"};
        ASSERT_TRUE(cache.store(many.id, &many));
    }
    KeyRecord extra = key_of(9999);
    extra.scopes = {"brand_new:read"};
    EXPECT_FALSE(cache.store(extra.id, &extra)) << "the dictionary is full";
    cache.clear();
    EXPECT_TRUE(cache.store(extra.id, &extra)) << "a clear starts a new dictionary";
}

// Issue #22 item 13: at 20,000 keys the cache held 17.6 MB (880 bytes a key),
// because it grew to its maximum at the first full set instead of by load.
TEST(KeyCache, TwentyThousandRandomKeysTakeAtMostTwoHundredBytesEach) {
    Counter c;
    KeyCache cache(counting_alloc, counting_free, &c);
    cache.set_max_keys(100000);
    std::vector<Uuid> ids = random_ids(20000, 13);
    KeyRecord k = key_of(12); // scopes, an allowlist, rate limits and a quota
    for (size_t n = 1; n <= ids.size(); ++n) {
        k.id = ids[n - 1];
        ASSERT_TRUE(cache.store(k.id, &k));
        // Not one lucky point of the growth cycle: every thousand keys from
        // 6,000 on (below that the 17 KiB of dictionaries weigh more per key).
        if (n % 1000 == 0 && n >= 6000) {
            EXPECT_LE(static_cast<double>(cache.bytes()) / cache.size(), 200.0) << n << " keys";
        }
    }
    double per_key = static_cast<double>(cache.bytes()) / cache.size();
    std::printf("[ MEASURED ] 20000 keys: %zu slots, %zu bytes, %zu cached, %.1f bytes/key\n", cache.capacity(),
                cache.bytes(), cache.size(), per_key);
    EXPECT_LE(per_key, 200.0);
    KeyRecord out;
    bool exists = false;
    size_t found = 0;
    for (const Uuid &id : ids)
        found += cache.find(id, &out, &exists) && exists && out.id == id;
    EXPECT_EQ(found, cache.size()) << "size() counts the cached keys";
    // Below the load threshold a new key evicts another only when the bounded
    // search for a chain of keys to move to their other sets fails: at a load
    // of at most 95% random ids make that very rare (none are lost with this
    // seed). Allow 0.1%: a search bound cut too short, or keys evicted instead
    // of moved (a single 4-way set per key, evicting past a load of 75%,
    // keeps about 81% of these keys), fail it.
    EXPECT_GE(found, 19980u);
}

TEST(KeyCache, LoadStaysBetweenEightyFiveAndNinetyFivePercentOnceGrown) {
    Counter c;
    KeyCache cache(counting_alloc, counting_free, &c);
    cache.set_max_keys(1000000); // never reached here
    std::vector<Uuid> ids = random_ids(30000, 22);
    size_t first = 0, growths = 0, last = 0;
    for (size_t n = 1; n <= ids.size(); ++n) {
        ASSERT_TRUE(cache.store(ids[n - 1], nullptr)) << n;
        size_t slots = cache.capacity();
        if (!first)
            first = slots;
        if (slots != last) {
            if (last) {
                ++growths;
                // Grown by a sixteenth (whole sets), not doubled nor to the maximum.
                EXPECT_LE(slots, last + last / 16 + KeyCache::kWays) << n;
            }
            last = slots;
        }
        ASSERT_GE(cache.size() + n / 1000, n) << "keys are moved, not evicted, below the threshold";
        ASSERT_LE(cache.size() * 100, slots * KeyCache::kMaxLoadPercent) << "over the threshold at " << n;
        if (slots > first) {
            ASSERT_GE(cache.size() * 100, slots * 85) << "grown before it was needed at " << n;
        }
    }
    EXPECT_GT(growths, 10u);
}

TEST(KeyCache, NeverExceedsItsMax) {
    for (size_t max : {16u, 1000u, 5000u, 50001u}) {
        Counter c;
        KeyCache cache(counting_alloc, counting_free, &c);
        cache.set_max_keys(max);
        std::vector<Uuid> ids = random_ids(max * 3, max);
        KeyRecord k = key_of(3);
        size_t max_bytes = 0;
        for (const Uuid &id : ids) {
            k.id = id;
            ASSERT_TRUE(cache.store(id, &k));
            ASSERT_LE(cache.capacity(), max);
            ASSERT_LE(cache.size(), cache.capacity());
            max_bytes = std::max(max_bytes, cache.bytes());
        }
        EXPECT_EQ(cache.capacity(), max / KeyCache::kWays * KeyCache::kWays) << "grown to its max, in whole sets";
        EXPECT_LE(max_bytes, max * KeyCache::kSlotBytes + KeyCache::kMaxScopes * KeyCache::kScopeBytes + 16384);
        EXPECT_GE(cache.size() * 100, cache.capacity() * KeyCache::kMaxLoadPercent) << "full, it evicts one key";
        KeyRecord out;
        bool exists;
        size_t recent = 0;
        for (size_t i = ids.size() - max / 10; i < ids.size(); ++i)
            recent += cache.find(ids[i], &out, &exists);
        EXPECT_GE(recent * 100, max / 10 * 95) << "the most recent keys are cached, max " << max;
    }
}

// Moving keys between their two sets, growing and evicting never lose track of
// a key: what find() answers is what was stored last, and size() counts it.
TEST(KeyCache, AgreesWithAMapUnderRandomOperations) {
    Counter c;
    KeyCache cache(counting_alloc, counting_free, &c);
    std::vector<Uuid> ids = random_ids(6000, 99);
    std::vector<int> stored(ids.size(), -1); // quota_version last stored, 0: no such key, -1: none since a clear
    std::mt19937_64 rng(7);
    size_t max = 4000;
    cache.set_max_keys(max);
    KeyRecord k = key_of(8), out;
    for (int op = 1; op <= 200000; ++op) {
        size_t i = rng() % ids.size();
        uint64_t what = rng() % 1000;
        if (what < 600) {
            int version = static_cast<int>(rng() % 1000) + 1;
            k.id = ids[i];
            k.quota_version = version;
            bool exists_now = version % 5 != 0;
            ASSERT_TRUE(cache.store(ids[i], exists_now ? &k : nullptr));
            stored[i] = exists_now ? version : 0;
        } else if (what < 998) {
            bool exists = false;
            if (cache.find(ids[i], &out, &exists)) {
                ASSERT_NE(stored[i], -1) << op;
                ASSERT_EQ(exists, stored[i] != 0) << op;
                if (exists) {
                    ASSERT_EQ(out.id, ids[i]);
                    ASSERT_EQ(out.quota_version, stored[i]) << op;
                }
            }
        } else if (what < 999) {
            cache.clear();
            std::fill(stored.begin(), stored.end(), -1);
        } else {
            max = 500 + rng() % 5000; // a smaller max than the slots held starts over
            cache.set_max_keys(max);
            if (cache.capacity() == 0)
                std::fill(stored.begin(), stored.end(), -1);
        }
        ASSERT_LE(cache.capacity(), max);
        ASSERT_LE(cache.size(), cache.capacity());
        if (op % 20000 == 0) {
            size_t found = 0;
            bool exists;
            for (const Uuid &id : ids)
                found += cache.find(id, &out, &exists);
            ASSERT_EQ(found, cache.size()) << op;
        }
    }
}

TEST(KeyCache, EraseForgetsOneKeyOnly) {
    Counter c;
    KeyCache cache(counting_alloc, counting_free, &c);
    KeyRecord a = key_of(1), b = key_of(2), out;
    ASSERT_TRUE(cache.store(a.id, &a));
    ASSERT_TRUE(cache.store(b.id, &b));
    cache.erase(a.id);
    bool exists = false;
    EXPECT_FALSE(cache.find(a.id, &out, &exists)) << "the erased key misses";
    EXPECT_TRUE(cache.find(b.id, &out, &exists) && exists) << "the other stays";
    EXPECT_EQ(cache.size(), 1u);
    cache.erase(a.id); // twice, or an id never cached: nothing happens
    EXPECT_EQ(cache.size(), 1u);
}
