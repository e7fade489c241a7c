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
    }
}

void LastUsedTracker::snapshot(std::vector<Uuid> *ids, std::vector<int64_t> *ats) const {
    ids->clear();
    ats->clear();
    ids->reserve(newest_.size());
    ats->reserve(newest_.size());
    for (const auto &[id, at] : newest_) {
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

} // namespace flint
