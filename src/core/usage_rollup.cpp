#include "usage_rollup.hpp"

#include <algorithm>
#include <cstring>
#include <tuple>

namespace flint {

int64_t floor_to(int64_t t, int64_t step) {
    int64_t q = t / step;
    if (t % step < 0)
        --q;
    return q * step;
}

int64_t minute_start(int64_t at) { return floor_to(at, kMicrosPerMinute); }

void UsageRollup::add(int64_t at, const Uuid *merchant, const Uuid *key, std::string_view outcome, int64_t cost,
                      int64_t requests) {
    const int64_t minute = minute_start(at);
    std::string id;
    id.reserve(8 + 2 + 32 + outcome.size());
    id.append(reinterpret_cast<const char *>(&minute), sizeof minute);
    id.push_back(merchant ? 1 : 0);
    if (merchant)
        id.append(reinterpret_cast<const char *>(merchant->data()), merchant->size());
    id.push_back(key ? 1 : 0);
    if (key)
        id.append(reinterpret_cast<const char *>(key->data()), key->size());
    id.append(outcome);
    auto [it, fresh] = groups_.try_emplace(std::move(id));
    UsageGroup &g = it->second;
    if (fresh) {
        g.minute = minute;
        g.has_merchant = merchant != nullptr;
        if (merchant)
            g.merchant = *merchant;
        g.has_key = key != nullptr;
        if (key)
            g.key = *key;
        g.outcome = outcome;
    }
    g.requests += requests;
    g.cost += cost;
}

int64_t UsageTally::slot_start(int64_t at) { return floor_to(at, kSlotMicros); }

size_t UsageTally::GroupHash::operator()(const Group &g) const {
    uint64_t h = static_cast<uint64_t>(g.slot) * 0x9E3779B97F4A7C15ull;
    h ^= UuidHash{}(g.key) + 0x7F4A7C159E3779B9ull + (h << 6) + (h >> 2);
    h ^= UuidHash{}(g.merchant) + (h << 6) + (h >> 2);
    h ^= static_cast<uint64_t>(g.outcome) << 2 | (g.has_key ? 2u : 0u) | (g.has_merchant ? 1u : 0u);
    return static_cast<size_t>(h);
}

void UsageTally::add(const LogRecord &row) {
    Group g{slot_start(row.at), {}, {}, row.has_merchant_id, row.has_key_id, row.outcome};
    if (row.has_merchant_id)
        g.merchant = row.merchant_id;
    if (row.has_key_id)
        g.key = row.key_id;
    Sums &s = sums_[g];
    s.requests += 1;
    s.cost += row.cost;
}

UsageRollup UsageTally::take(int64_t from, int64_t upto) {
    UsageRollup out;
    for (auto it = sums_.begin(); it != sums_.end();) {
        const Group &g = it->first;
        if (g.slot > upto - kSlotMicros) { // not wholly before upto: stays
            ++it;
            continue;
        }
        if (g.slot >= from)
            out.add(g.slot, g.has_merchant ? &g.merchant : nullptr, g.has_key ? &g.key : nullptr, code_name(g.outcome),
                    it->second.cost, it->second.requests);
        it = sums_.erase(it);
    }
    return out;
}

namespace {

// A reader of PostgreSQL's binary COPY format that stops at the first
// inconsistency.
struct CopyReader {
    std::string_view data;
    size_t pos = 0;
    bool ok = true;

    bool take(size_t n, const char **out) {
        if (!ok || data.size() - pos < n)
            return ok = false;
        *out = data.data() + pos;
        pos += n;
        return true;
    }
    uint64_t be(size_t n) {
        const char *p;
        if (!take(n, &p))
            return 0;
        uint64_t v = 0;
        for (size_t i = 0; i < n; ++i)
            v = (v << 8) | static_cast<uint8_t>(p[i]);
        return v;
    }
};

constexpr int kAt = 0, kKeyId = 1, kMerchantId = 3, kOutcome = 6, kCost = 13;

} // namespace

bool UsageRollup::add_copy_binary(std::string_view data, bool with_cost, int64_t before, int64_t *latest_rest) {
    static constexpr char kSignature[] = "PGCOPY\n\xff\r\n";
    CopyReader r{data};
    const char *sig;
    if (!r.take(11, &sig) || std::memcmp(sig, kSignature, 11) != 0)
        return false;
    (void)r.be(4);                      // flags
    const uint64_t extension = r.be(4); // header extension
    const char *skip;
    if (!r.take(extension, &skip))
        return false;
    UsageRollup batch;
    int64_t latest = INT64_MIN;
    for (;;) {
        const uint64_t fields = r.be(2);
        if (!r.ok)
            return false;
        if (fields == 0xFFFF)
            break;
        if (fields <= static_cast<uint64_t>(with_cost ? kCost : kOutcome))
            return false;
        int64_t at = 0, cost = 1;
        Uuid key{}, merchant{};
        bool has_key = false, has_merchant = false;
        std::string_view outcome;
        for (uint64_t f = 0; f < fields; ++f) {
            const uint64_t raw = r.be(4);
            if (!r.ok)
                return false;
            if (raw == 0xFFFFFFFF) { // NULL
                if (f == kAt || f == kOutcome)
                    return false;
                continue;
            }
            const char *p;
            if (!r.take(raw, &p))
                return false;
            if (f == kAt && raw == 8) {
                uint64_t v = 0;
                for (int i = 0; i < 8; ++i)
                    v = (v << 8) | static_cast<uint8_t>(p[i]);
                at = static_cast<int64_t>(v);
            } else if ((f == kKeyId || f == kMerchantId) && raw == 16) {
                std::memcpy(f == kKeyId ? key.data() : merchant.data(), p, 16);
                (f == kKeyId ? has_key : has_merchant) = true;
            } else if (f == kOutcome) {
                outcome = std::string_view(p, raw);
            } else if (f == kCost && with_cost && raw == 4) {
                uint32_t v = 0;
                for (int i = 0; i < 4; ++i)
                    v = (v << 8) | static_cast<uint8_t>(p[i]);
                cost = static_cast<int32_t>(v);
            } else if (f == kAt || f == kKeyId || f == kMerchantId || (f == kCost && with_cost)) {
                return false; // a field of the wrong width
            }
        }
        if (at < before)
            batch.add(at, has_merchant ? &merchant : nullptr, has_key ? &key : nullptr, outcome, cost);
        else
            latest = std::max(latest, at);
    }
    if (latest_rest)
        *latest_rest = latest;
    for (auto &[id, g] : batch.groups_) {
        auto [it, fresh] = groups_.try_emplace(id, g);
        if (!fresh) {
            it->second.requests += g.requests;
            it->second.cost += g.cost;
        }
    }
    return true;
}

std::vector<UsageGroup> UsageRollup::groups() const {
    std::vector<UsageGroup> out;
    out.reserve(groups_.size());
    for (const auto &entry : groups_)
        out.push_back(entry.second);
    auto order = [](const UsageGroup &g) {
        return std::make_tuple(g.minute, g.has_merchant, g.merchant, g.has_key, g.key, g.outcome);
    };
    std::sort(out.begin(), out.end(), [&](const UsageGroup &a, const UsageGroup &b) { return order(a) < order(b); });
    return out;
}

} // namespace flint
