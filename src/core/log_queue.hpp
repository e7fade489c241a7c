// A bounded multi-producer, single-consumer queue of LogRecords laid out in
// caller-provided memory (Postgres shared memory, or a buffer in unit tests).
// Producers reserve a cell with one compare-and-swap and never take a lock;
// each cell's sequence number says whether it is free, written, or being
// written (after D. Vyukov's bounded queue). Postgres-free.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "log_record.hpp"

namespace flint {

class LogQueue {
  public:
    // Bytes to reserve for a queue of `capacity` cells (a power of two).
    static size_t bytes_needed(uint32_t capacity);
    // Constructs the queue in `memory` (at least bytes_needed, 64-byte aligned).
    static LogQueue *create(void *memory, uint32_t capacity);

    // False when the queue is full. Safe from any number of producers.
    bool try_push(const LogRecord &record);
    // False when the next record is not yet fully written. One consumer only.
    bool try_pop(LogRecord &out);

    uint32_t capacity() const { return static_cast<uint32_t>(mask_ + 1); }
    // Records ever reserved by producers; a flush waits until `completed` reaches it.
    uint64_t pushed() const { return enqueue_pos_.load(std::memory_order_acquire); }
    uint64_t popped() const { return dequeue_pos_.load(std::memory_order_acquire); }
    uint64_t depth() const { return pushed() - popped(); }
    // When the oldest record not yet popped was made (its `at`), or 0 when
    // none is ready. A racy read from any process: for monitoring only.
    int64_t oldest_at();

    // Records the consumer has finished with (inserted, or dropped with a
    // warning), published after its transaction commits.
    std::atomic<uint64_t> completed{0};
    // Verifications refused because the queue stayed full (fail closed).
    std::atomic<uint64_t> refused{0};
    // Insert transactions the consumer has committed.
    std::atomic<uint64_t> batches{0};

  private:
    struct alignas(64) Cell {
        std::atomic<uint64_t> sequence;
        LogRecord record;
    };
    Cell *cells() { return reinterpret_cast<Cell *>(reinterpret_cast<char *>(this) + header_size()); }
    static constexpr size_t header_size() { return (sizeof(LogQueue) + 63) / 64 * 64; }

    uint64_t mask_ = 0;
    alignas(64) std::atomic<uint64_t> enqueue_pos_{0};
    alignas(64) std::atomic<uint64_t> dequeue_pos_{0};
};

static_assert(std::atomic<uint64_t>::is_always_lock_free, "the queue lives in shared memory across processes");

} // namespace flint
