#include "key_cache.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

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
    // 4-way sets at a load of one key per slot: some sets overflow and evict
    // (about 80% occupancy for random ids), never the whole cache.
    EXPECT_GT(cache.size(), 75000u);
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
