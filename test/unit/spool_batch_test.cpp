#include <gtest/gtest.h>

#include "spool_batch.hpp"

using namespace flint;

namespace {

std::vector<LogRecord> some_rows(int n) {
    std::vector<LogRecord> rows(n);
    for (int i = 0; i < n; ++i) {
        rows[i].at = 1000 + i;
        rows[i].has_key_id = true;
        rows[i].key_id.fill(static_cast<uint8_t>(i));
        rows[i].outcome = i % 2 ? Code::key_revoked : Code::ok;
        copy_field(rows[i].request_id, "req", 3);
    }
    return rows;
}

Uuid origin_of(uint8_t b) {
    Uuid u;
    u.fill(b);
    return u;
}

} // namespace

TEST(SpoolBatch, RoundTrip) {
    auto rows = some_rows(3);
    std::string file = encode_spool_batch(origin_of(7), 42, "standby1", rows.data(), rows.size());
    EXPECT_EQ(file.size(), kSpoolHeaderSize + 3 * sizeof(LogRecord));
    EXPECT_EQ(spool_batch_rows(file.data(), file.size()), 3);
    SpoolBatch b;
    ASSERT_EQ(decode_spool_batch(file.data(), file.size(), &b), SpoolRead::ok);
    EXPECT_EQ(b.origin, origin_of(7));
    EXPECT_EQ(b.batch_id, 42u);
    EXPECT_EQ(b.server, "standby1");
    ASSERT_EQ(b.rows.size(), 3u);
    EXPECT_EQ(b.rows[2].at, 1002);
    EXPECT_EQ(b.rows[1].outcome, Code::key_revoked);
    EXPECT_STREQ(b.rows[0].request_id, "req");
}

TEST(SpoolBatch, EmptyBatchAndLongServerName) {
    std::string file = encode_spool_batch(origin_of(1), 1, std::string(200, 's'), nullptr, 0);
    SpoolBatch b;
    ASSERT_EQ(decode_spool_batch(file.data(), file.size(), &b), SpoolRead::ok);
    EXPECT_TRUE(b.rows.empty());
    EXPECT_EQ(b.server, std::string(63, 's')); // cut to the field, still terminated
}

TEST(SpoolBatch, EveryDamageIsDetected) {
    auto rows = some_rows(4);
    const std::string file = encode_spool_batch(origin_of(9), 5, "s", rows.data(), rows.size());
    SpoolBatch b;
    // A flipped bit anywhere, header or rows.
    for (size_t pos : {size_t(9), size_t(20), size_t(40), kSpoolHeaderSize + 1, file.size() - 1}) {
        std::string bad = file;
        bad[pos] ^= 0x10;
        EXPECT_NE(decode_spool_batch(bad.data(), bad.size(), &b), SpoolRead::ok) << "byte " << pos;
    }
    // Cut short (a crash mid-write), or a stray byte appended.
    EXPECT_EQ(decode_spool_batch(file.data(), file.size() - 1, &b), SpoolRead::truncated);
    EXPECT_EQ(decode_spool_batch(file.data(), 10, &b), SpoolRead::truncated);
    std::string longer = file + "x";
    EXPECT_EQ(decode_spool_batch(longer.data(), longer.size(), &b), SpoolRead::truncated);
    // Not ours at all.
    std::string other(file.size(), 'x');
    EXPECT_EQ(decode_spool_batch(other.data(), other.size(), &b), SpoolRead::not_a_batch);
    EXPECT_EQ(spool_batch_rows(other.data(), other.size()), -1);
    // Another build's record layout is refused, never misread.
    std::string layout = file;
    layout[8] ^= 0x01;
    EXPECT_EQ(decode_spool_batch(layout.data(), layout.size(), &b), SpoolRead::other_layout);
    EXPECT_EQ(spool_batch_rows(layout.data(), layout.size()), -1);
}

TEST(SpoolBatch, FileNamesSortInSpoolingOrder) {
    uint64_t seq = 0;
    EXPECT_EQ(spool_file_name(0x1234), "0000000000001234.batch");
    EXPECT_TRUE(parse_spool_file_name("0000000000001234.batch", &seq));
    EXPECT_EQ(seq, 0x1234u);
    EXPECT_TRUE(parse_spool_file_name(spool_file_name(UINT64_MAX).c_str(), &seq));
    EXPECT_EQ(seq, UINT64_MAX);
    for (const char *bad : {"0000000000001234.tmp", "000000000001234.batch", "000000000000123G.batch", "",
                            "0000000000001234.batchx", "000000000000ABCD.batch"})
        EXPECT_FALSE(parse_spool_file_name(bad, &seq)) << bad;
    EXPECT_LT(spool_file_name(0xff), spool_file_name(0x100));
    // The clock going back never reuses or reorders a sequence.
    EXPECT_EQ(next_spool_sequence(100, 200), 200u);
    EXPECT_EQ(next_spool_sequence(100, 50), 101u);
    EXPECT_EQ(next_spool_sequence(100, 100), 101u);
}
