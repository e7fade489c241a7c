#include "last_used.hpp"

#include <algorithm>

namespace flint {

void LastUsedTracker::note(const LogRecord *rows, size_t count) {
    for (size_t i = 0; i < count; ++i) {
        const LogRecord &r = rows[i];
        if (r.outcome != Code::ok || !r.has_key_id)
            continue;
        auto [it, inserted] = newest_.try_emplace(r.key_id, r.at);
        if (!inserted)
            it->second = std::max(it->second, r.at);
        else if (!written_within_interval(r.key_id, r.at) && deferred_.count(r.key_id) == 0)
            urgent_.push_back(r.key_id);
    }
}

bool LastUsedTracker::written_within_interval(const Uuid &id, int64_t at) const {
    auto it = written_.find(id);
    return it != written_.end() && at - it->second < interval_us_;
}

void LastUsedTracker::take_urgent(std::vector<Uuid> *ids, std::vector<int64_t> *ats, size_t limit) {
    ids->clear();
    ats->clear();
    size_t taken = 0;
    for (; taken < urgent_.size() && ids->size() < limit; ++taken) {
        auto it = newest_.find(urgent_[taken]);
        if (it == newest_.end())
            continue; // written by a round meanwhile
        ids->push_back(it->first);
        ats->push_back(it->second);
    }
    urgent_.erase(urgent_.begin(), urgent_.begin() + static_cast<std::ptrdiff_t>(taken));
}

void LastUsedTracker::mark_written(const std::vector<Uuid> &ids, int64_t now_us) {
    for (const Uuid &id : ids)
        written_[id] = now_us;
}

void LastUsedTracker::prune_written(int64_t now_us) {
    for (auto it = written_.begin(); it != written_.end();)
        it = now_us - it->second >= interval_us_ ? written_.erase(it) : std::next(it);
}

void LastUsedTracker::snapshot(std::vector<Uuid> *ids, std::vector<int64_t> *ats, size_t limit, int64_t now_us) const {
    ids->clear();
    ats->clear();
    ids->reserve(std::min(limit, newest_.size()));
    ats->reserve(std::min(limit, newest_.size()));
    for (const auto &[id, at] : newest_) {
        if (ids->size() >= limit)
            break;
        if (now_us >= 0 && written_within_interval(id, now_us))
            continue;
        ids->push_back(id);
        ats->push_back(at);
    }
}

void LastUsedTracker::forget_all_but(const std::vector<Uuid> &keep) {
    std::unordered_map<Uuid, int64_t, UuidHash> kept;
    for (const Uuid &id : keep) {
        auto it = newest_.find(id);
        if (it != newest_.end())
            kept.emplace(*it);
    }
    newest_.swap(kept);
}

void LastUsedTracker::forget(const std::vector<Uuid> &written, const std::vector<Uuid> &keep) {
    for (const Uuid &id : written)
        if (std::find(keep.begin(), keep.end(), id) == keep.end())
            newest_.erase(id);
}

void LastUsedTracker::defer(const std::vector<Uuid> &ids) {
    for (const Uuid &id : ids) {
        auto it = newest_.find(id);
        if (it == newest_.end())
            continue;
        auto [d, inserted] = deferred_.try_emplace(id, it->second);
        if (!inserted)
            d->second = std::max(d->second, it->second);
        newest_.erase(it);
    }
}

void LastUsedTracker::restore() {
    for (const auto &[id, at] : deferred_) {
        auto [it, inserted] = newest_.try_emplace(id, at);
        if (!inserted)
            it->second = std::max(it->second, at);
    }
    deferred_.clear();
}

} // namespace flint
