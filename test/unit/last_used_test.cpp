#include "last_used.hpp"

#include <gtest/gtest.h>

using namespace flint;

namespace {
LogRecord row(uint8_t key, int64_t at, Code outcome = Code::ok, bool has_key = true) {
    LogRecord r;
    r.key_id[0] = key;
    r.has_key_id = has_key;
    r.at = at;
    r.outcome = outcome;
    return r;
}
int64_t newest(const LastUsedTracker &t, uint8_t key) {
    std::vector<Uuid> ids;
    std::vector<int64_t> ats;
    t.snapshot(&ids, &ats);
    for (size_t i = 0; i < ids.size(); ++i)
        if (ids[i][0] == key)
            return ats[i];
    return -1;
}
} // namespace

TEST(LastUsed, KeepsTheNewestSuccessPerKey) {
    LastUsedTracker t;
    LogRecord rows[] = {
        row(1, 10), row(1, 30), row(1, 20), row(2, 5), row(2, 50, Code::invalid_key), row(3, 7, Code::ok, false)};
    t.note(rows, std::size(rows));
    EXPECT_EQ(t.size(), 2u);
    EXPECT_EQ(newest(t, 1), 30);
    EXPECT_EQ(newest(t, 2), 5) << "a failure is not a use";
    EXPECT_EQ(newest(t, 3), -1) << "a row without a key id names no key";
}

TEST(LastUsed, LaterBatchesMoveForwardNeverBack) {
    LastUsedTracker t;
    LogRecord a[] = {row(1, 100)};
    LogRecord b[] = {row(1, 40)};
    t.note(a, 1);
    t.note(b, 1);
    EXPECT_EQ(newest(t, 1), 100);
}

TEST(LastUsed, ForgetKeepsOnlyTheSkippedKeys) {
    LastUsedTracker t;
    LogRecord rows[] = {row(1, 1), row(2, 2), row(3, 3)};
    t.note(rows, 3);
    Uuid two{};
    two[0] = 2;
    Uuid gone{};
    gone[0] = 9;
    t.forget_all_but({two, gone});
    EXPECT_EQ(t.size(), 1u);
    EXPECT_EQ(newest(t, 2), 2);
}

TEST(LastUsed, CostIsPerRowNotPerDistinctKey) {
    // 100,000 distinct keys in one batch: one map entry each, nothing quadratic.
    std::vector<LogRecord> rows(100000);
    for (size_t i = 0; i < rows.size(); ++i) {
        rows[i].has_key_id = true;
        std::memcpy(rows[i].key_id.data(), &i, sizeof i);
        rows[i].at = static_cast<int64_t>(i);
    }
    LastUsedTracker t;
    t.note(rows.data(), rows.size());
    EXPECT_EQ(t.size(), rows.size());
}

TEST(LastUsed, WrittenInPartsEachKeyOnce) {
    // The worker writes at most a part per pass; after each part those keys
    // are forgotten (except the ones locked elsewhere), the rest stay.
    std::vector<LogRecord> rows;
    for (uint8_t k = 1; k <= 10; ++k)
        rows.push_back(row(k, k * 10));
    LastUsedTracker t;
    t.note(rows.data(), rows.size());
    std::vector<Uuid> ids;
    std::vector<int64_t> ats;
    t.snapshot(&ids, &ats, 4);
    ASSERT_EQ(ids.size(), 4u);
    std::vector<Uuid> locked = {ids[0]};
    t.forget(ids, locked);
    EXPECT_EQ(t.size(), 7u);
    EXPECT_EQ(newest(t, ids[0][0]), ats[0]) << "a key locked elsewhere stays pending with its newest use";
    for (size_t i = 1; i < ids.size(); ++i)
        EXPECT_EQ(newest(t, ids[i][0]), -1) << "a written key is forgotten";
    t.snapshot(&ids, &ats, 100);
    EXPECT_EQ(ids.size(), 7u) << "the limit only caps the part";
}

TEST(LastUsed, DeferredKeysWaitForTheNextRound) {
    // Keys locked elsewhere leave this round's parts, so they cannot fill
    // every part; restore() brings them back with the newest use seen.
    LastUsedTracker t;
    LogRecord rows[] = {row(1, 10), row(2, 20), row(3, 30)};
    t.note(rows, 3);
    Uuid one{};
    one[0] = 1;
    t.defer({one});
    EXPECT_EQ(t.size(), 2u);
    EXPECT_EQ(t.deferred(), 1u);
    EXPECT_EQ(newest(t, 1), -1) << "not in this round's parts";
    LogRecord later[] = {row(1, 5), row(1, 40)};
    t.note(later, 2); // used again meanwhile
    t.restore();
    EXPECT_EQ(t.deferred(), 0u);
    EXPECT_EQ(newest(t, 1), 40);
    EXPECT_EQ(t.size(), 3u);
}

namespace {
LogRecord use_of(const Uuid &id, int64_t at) {
    LogRecord r;
    r.outcome = Code::ok;
    r.has_key_id = true;
    r.key_id = id;
    r.at = at;
    return r;
}
Uuid key_n(uint8_t n) {
    Uuid id{};
    id[0] = n;
    return id;
}
} // namespace

TEST(LastUsedFirstUse, AFirstUseIsUrgentOnce) {
    LastUsedTracker t;
    t.set_interval(60'000'000);
    LogRecord rows[] = {use_of(key_n(1), 1000), use_of(key_n(1), 2000), use_of(key_n(2), 1500)};
    t.note(rows, 3);
    std::vector<Uuid> ids;
    std::vector<int64_t> ats;
    t.take_urgent(&ids, &ats, 100);
    ASSERT_EQ(ids.size(), 2u);
    EXPECT_EQ(ids[0], key_n(1));
    EXPECT_EQ(ats[0], 2000); // its newest use, not the first
    t.take_urgent(&ids, &ats, 100);
    EXPECT_TRUE(ids.empty()) << "taken once";
}

TEST(LastUsedFirstUse, AKeyWrittenWithinTheIntervalIsNotUrgent) {
    LastUsedTracker t;
    t.set_interval(60'000'000);
    LogRecord first = use_of(key_n(1), 1'000'000);
    t.note(&first, 1);
    std::vector<Uuid> ids;
    std::vector<int64_t> ats;
    t.take_urgent(&ids, &ats, 100);
    t.mark_written(ids, 1'100'000);
    t.forget(ids, {});
    // Used again 30 s later: waits for the round (one write per interval).
    LogRecord again = use_of(key_n(1), 31'000'000);
    t.note(&again, 1);
    t.take_urgent(&ids, &ats, 100);
    EXPECT_TRUE(ids.empty());
    EXPECT_EQ(t.size(), 1u);
    // The round writes it; used again two minutes after the first write: urgent.
    t.forget({key_n(1)}, {});
    LogRecord later = use_of(key_n(1), 121'100'000);
    t.note(&later, 1);
    t.take_urgent(&ids, &ats, 100);
    EXPECT_EQ(ids, std::vector<Uuid>{key_n(1)});
}

TEST(LastUsedFirstUse, LimitAndPruning) {
    LastUsedTracker t;
    t.set_interval(10);
    std::vector<LogRecord> rows;
    for (uint8_t i = 1; i <= 5; ++i)
        rows.push_back(use_of(key_n(i), 100));
    t.note(rows.data(), rows.size());
    std::vector<Uuid> ids;
    std::vector<int64_t> ats;
    t.take_urgent(&ids, &ats, 2);
    EXPECT_EQ(ids.size(), 2u);
    EXPECT_EQ(t.urgent(), 3u);
    t.mark_written(ids, 100);
    t.prune_written(105);
    t.forget(ids, {});
    LogRecord again = use_of(ids[0], 105);
    t.note(&again, 1);
    EXPECT_EQ(t.urgent(), 3u) << "written 5 us ago, interval 10: not urgent";
    t.prune_written(110); // the write is an interval old: forgotten
    t.forget({ids[0]}, {});
    LogRecord later = use_of(ids[0], 111);
    t.note(&later, 1);
    EXPECT_EQ(t.urgent(), 4u);
}

TEST(LastUsedFirstUse, ATimedRoundSkipsAKeyJustWrittenAForcedOneDoesNot) {
    LastUsedTracker t;
    t.set_interval(60'000'000);
    LogRecord first = use_of(key_n(1), 1'000'000);
    t.note(&first, 1);
    std::vector<Uuid> ids;
    std::vector<int64_t> ats;
    t.take_urgent(&ids, &ats, 100);
    t.mark_written(ids, 1'000'000);
    t.forget(ids, {});
    LogRecord again = use_of(key_n(1), 20'000'000);
    t.note(&again, 1);
    t.snapshot(&ids, &ats, 100, 30'000'000); // the round, 29 s after the write
    EXPECT_TRUE(ids.empty()) << "one write per key per interval";
    t.snapshot(&ids, &ats, 100, 61'000'001); // the next round
    EXPECT_EQ(ids, std::vector<Uuid>{key_n(1)});
    t.snapshot(&ids, &ats, 100); // flint_flush_log: everything
    EXPECT_EQ(ids, std::vector<Uuid>{key_n(1)});
}
