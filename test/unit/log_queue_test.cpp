#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "log_queue.hpp"

using namespace flint;

namespace {
struct QueueMemory {
    explicit QueueMemory(uint32_t capacity)
        : bytes(LogQueue::bytes_needed(capacity)), memory(std::aligned_alloc(64, (bytes + 63) / 64 * 64)),
          queue(LogQueue::create(memory, capacity)) {}
    ~QueueMemory() { std::free(memory); }
    size_t bytes;
    void *memory;
    LogQueue *queue;
};

LogRecord record(int32_t producer, int64_t seq) {
    LogRecord r;
    r.backend_pid = producer;
    r.at = seq;
    return r;
}
} // namespace

TEST(LogQueue, FifoAndFull) {
    QueueMemory m(8);
    LogQueue &q = *m.queue;
    EXPECT_EQ(q.capacity(), 8u);
    LogRecord out;
    EXPECT_FALSE(q.try_pop(out));
    for (int i = 0; i < 8; ++i)
        ASSERT_TRUE(q.try_push(record(1, i)));
    EXPECT_FALSE(q.try_push(record(1, 99))) << "a full queue refuses, never overwrites";
    EXPECT_EQ(q.depth(), 8u);
    for (int i = 0; i < 8; ++i) {
        ASSERT_TRUE(q.try_pop(out));
        EXPECT_EQ(out.at, i);
    }
    EXPECT_FALSE(q.try_pop(out));
    // wraps around many laps
    for (int lap = 0; lap < 100; ++lap) {
        ASSERT_TRUE(q.try_push(record(1, lap)));
        ASSERT_TRUE(q.try_pop(out));
        ASSERT_EQ(out.at, lap);
    }
    EXPECT_EQ(q.pushed(), 108u);
    EXPECT_EQ(q.popped(), 108u);
}

// Many producers, one consumer: every record arrives exactly once, and each
// producer's records arrive in the order it pushed them.
TEST(LogQueue, ConcurrentProducersLoseNothing) {
    QueueMemory m(256);
    LogQueue &q = *m.queue;
    constexpr int kProducers = 4, kPerProducer = 50000;
    std::vector<std::thread> producers;
    for (int p = 0; p < kProducers; ++p)
        producers.emplace_back([&q, p] {
            for (int i = 0; i < kPerProducer; ++i)
                while (!q.try_push(record(p, i)))
                    std::this_thread::yield();
        });
    std::vector<int64_t> next(kProducers, 0);
    int received = 0;
    LogRecord out;
    while (received < kProducers * kPerProducer) {
        if (!q.try_pop(out)) {
            std::this_thread::yield();
            continue;
        }
        ASSERT_GE(out.backend_pid, 0);
        ASSERT_LT(out.backend_pid, kProducers);
        ASSERT_EQ(out.at, next[out.backend_pid]) << "per-producer order";
        ++next[out.backend_pid];
        ++received;
    }
    for (auto &t : producers)
        t.join();
    EXPECT_FALSE(q.try_pop(out));
    EXPECT_EQ(q.pushed(), static_cast<uint64_t>(kProducers * kPerProducer));
}

TEST(LogRecord, CopyFieldCutsOnUtf8Boundary) {
    char buf[6];
    copy_field(buf, "abc", 3);
    EXPECT_STREQ(buf, "abc");
    copy_field(buf, "abcdefgh", 8);
    EXPECT_STREQ(buf, "abcde");
    copy_field(buf, "abcd\xC3\xA9", 6); // "abcdé": é would be split at byte 5
    EXPECT_STREQ(buf, "abcd");
    copy_field(buf, nullptr, 0);
    EXPECT_STREQ(buf, "");
}

TEST(LogRecord, BinaryCopyEncoding) {
    LogRecord r;
    r.at = 0x0102030405060708;
    r.has_key_id = true;
    r.key_id.fill(0xAB);
    copy_field(r.display_prefix, "fk_live_12345678", 16);
    r.outcome = Code::missing_scope;
    r.backend_pid = 42;
    r.client_family = 4;
    r.client_ip[0] = 127;
    r.client_ip[3] = 1;
    r.cost = 3;
    std::string out = encode_copy_binary(&r, 1);
    ASSERT_EQ(out.substr(0, 11), std::string("PGCOPY\n\xff\r\n\0", 11));
    EXPECT_EQ(out.substr(11, 8), std::string(8, '\0'));
    size_t pos = 19;
    auto u16 = [&] {
        uint16_t v = uint16_t(uint8_t(out[pos]) << 8 | uint8_t(out[pos + 1]));
        pos += 2;
        return v;
    };
    auto u32 = [&] {
        uint32_t v = 0;
        for (int i = 0; i < 4; ++i)
            v = v << 8 | uint8_t(out[pos++]);
        return v;
    };
    EXPECT_EQ(u16(), 14); // columns, in the order of kCopyColumns
    EXPECT_EQ(std::size(kCopyColumns), 14u);
    EXPECT_EQ(u32(), 8u);            // at
    EXPECT_EQ(uint8_t(out[pos]), 1); // big-endian
    pos += 8;
    EXPECT_EQ(u32(), 16u); // key_id
    pos += 16;
    EXPECT_EQ(u32(), 16u); // display_prefix
    EXPECT_EQ(out.substr(pos, 16), "fk_live_12345678");
    pos += 16;
    EXPECT_EQ(u32(), 0xFFFFFFFFu); // merchant_id NULL
    EXPECT_EQ(u32(), 0xFFFFFFFFu); // requested_merchant NULL
    EXPECT_EQ(u32(), 0xFFFFFFFFu); // scope NULL
    EXPECT_EQ(u32(), 13u);         // outcome
    EXPECT_EQ(out.substr(pos, 13), "missing_scope");
    pos += 13;
    EXPECT_EQ(u32(), 5u);
    EXPECT_EQ(out.substr(pos, 5), "FK005");
    pos += 5;
    EXPECT_EQ(u32(), 8u); // inet: family, bits, is_cidr, length, 4 bytes
    EXPECT_EQ(out.substr(pos, 8), std::string("\x02\x20\x00\x04\x7f\x00\x00\x01", 8));
    pos += 8;
    EXPECT_EQ(u32(), 0xFFFFFFFFu); // application_name
    EXPECT_EQ(u32(), 0xFFFFFFFFu); // request_id
    EXPECT_EQ(u32(), 4u);
    EXPECT_EQ(u32(), 42u);
    EXPECT_EQ(u32(), 6u);
    EXPECT_EQ(out.substr(pos, 6), "verify");
    pos += 6;
    EXPECT_EQ(u32(), 4u); // cost
    EXPECT_EQ(u32(), 3u);
    EXPECT_EQ(u16(), 0xFFFF); // trailer
    EXPECT_EQ(pos, out.size());
    // Without the cost column (a table still at 1.1): 13 fields.
    std::string old = encode_copy_binary(&r, 1, false);
    EXPECT_EQ(uint8_t(old[20]), 13);
    EXPECT_EQ(old.size(), out.size() - 8);
    // With the server column (1.2): 15 fields, the name last in each row.
    std::string named = encode_copy_binary(&r, 1, true, nullptr, "standby1");
    EXPECT_EQ(uint8_t(named[20]), 15);
    EXPECT_EQ(named.size(), out.size() + 4 + 8);
    EXPECT_EQ(named.substr(named.size() - 2 - 8, 8), "standby1");
}
