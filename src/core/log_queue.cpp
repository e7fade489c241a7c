#include "log_queue.hpp"

#include <new>

namespace flint {

int64_t LogQueue::oldest_at() {
    uint64_t pos = dequeue_pos_.load(std::memory_order_acquire);
    Cell &cell = cells()[pos & mask_];
    if (cell.sequence.load(std::memory_order_acquire) != pos + 1)
        return 0;
    return cell.record.at;
}

size_t LogQueue::bytes_needed(uint32_t capacity) { return header_size() + sizeof(Cell) * size_t(capacity); }

LogQueue *LogQueue::create(void *memory, uint32_t capacity) {
    auto *queue = new (memory) LogQueue();
    queue->mask_ = capacity - 1;
    Cell *cells = queue->cells();
    for (uint32_t i = 0; i < capacity; ++i)
        new (&cells[i]) Cell{{i}, LogRecord{}};
    return queue;
}

bool LogQueue::try_push(const LogRecord &record) {
    uint64_t pos = enqueue_pos_.load(std::memory_order_relaxed);
    for (;;) {
        Cell &cell = cells()[pos & mask_];
        uint64_t seq = cell.sequence.load(std::memory_order_acquire);
        int64_t diff = static_cast<int64_t>(seq) - static_cast<int64_t>(pos);
        if (diff == 0) {
            if (enqueue_pos_.compare_exchange_weak(pos, pos + 1, std::memory_order_acq_rel,
                                                   std::memory_order_relaxed)) {
                cell.record = record;
                cell.sequence.store(pos + 1, std::memory_order_release);
                return true;
            }
        } else if (diff < 0) {
            return false; // the cell still holds a record from one lap ago: full
        } else {
            pos = enqueue_pos_.load(std::memory_order_relaxed);
        }
    }
}

bool LogQueue::try_pop(LogRecord &out) {
    uint64_t pos = dequeue_pos_.load(std::memory_order_relaxed);
    Cell &cell = cells()[pos & mask_];
    if (cell.sequence.load(std::memory_order_acquire) != pos + 1)
        return false;
    out = cell.record;
    cell.sequence.store(pos + mask_ + 1, std::memory_order_release);
    dequeue_pos_.store(pos + 1, std::memory_order_release);
    return true;
}

} // namespace flint
