#include "spool_batch.hpp"

#include <cstdio>
#include <cstring>
#include <type_traits>

#include "crc32.hpp"

namespace flint {

static_assert(std::is_trivially_copyable_v<LogRecord>, "spooled records are written as raw bytes");

namespace {

constexpr char kMagic[8] = {'F', 'K', 'S', 'P', 'O', 'O', 'L', '1'};
constexpr size_t kServerField = 64;

// Header layout (little-endian host order: a spool never leaves its server).
struct Header {
    char magic[8];
    uint32_t record_size; // sizeof(LogRecord): another build's layout is refused, never misread
    uint32_t count;
    uint64_t batch_id;
    uint8_t origin[16];
    char server[kServerField];
    uint32_t crc; // over the whole file with this field zero
    uint8_t reserved[kSpoolHeaderSize - 8 - 4 - 4 - 8 - 16 - kServerField - 4];
};
static_assert(sizeof(Header) == kSpoolHeaderSize, "the header has a fixed size");

uint32_t file_crc(const char *data, size_t len) {
    std::string copy(data, len);
    std::memset(&copy[offsetof(Header, crc)], 0, sizeof(uint32_t));
    return crc32(copy.data(), copy.size());
}

} // namespace

const char *spool_read_name(SpoolRead r) {
    switch (r) {
    case SpoolRead::ok: return "ok";
    case SpoolRead::not_a_batch: return "not a spool batch";
    case SpoolRead::other_layout: return "written by a build with another record layout";
    case SpoolRead::truncated: return "truncated";
    case SpoolRead::bad_checksum: return "checksum mismatch";
    }
    return "?";
}

std::string encode_spool_batch(const Uuid &origin, uint64_t batch_id, const std::string &server, const LogRecord *rows,
                               size_t count) {
    Header h{};
    std::memcpy(h.magic, kMagic, sizeof kMagic);
    h.record_size = sizeof(LogRecord);
    h.count = static_cast<uint32_t>(count);
    h.batch_id = batch_id;
    std::memcpy(h.origin, origin.data(), 16);
    copy_field(h.server, server.data(), server.size());
    std::string out(reinterpret_cast<const char *>(&h), sizeof h);
    if (count > 0)
        out.append(reinterpret_cast<const char *>(rows), count * sizeof(LogRecord));
    uint32_t crc = file_crc(out.data(), out.size());
    std::memcpy(&out[offsetof(Header, crc)], &crc, sizeof crc);
    return out;
}

long spool_batch_rows(const char *data, size_t len) {
    Header h;
    if (len < sizeof h)
        return -1;
    std::memcpy(&h, data, sizeof h);
    if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0 || h.record_size != sizeof(LogRecord))
        return -1;
    return h.count;
}

SpoolRead decode_spool_batch(const char *data, size_t len, SpoolBatch *out) {
    Header h;
    if (len < sizeof h)
        return SpoolRead::truncated;
    std::memcpy(&h, data, sizeof h);
    if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0)
        return SpoolRead::not_a_batch;
    if (h.record_size != sizeof(LogRecord))
        return SpoolRead::other_layout;
    if (len != sizeof h + static_cast<size_t>(h.count) * sizeof(LogRecord))
        return SpoolRead::truncated;
    if (file_crc(data, len) != h.crc)
        return SpoolRead::bad_checksum;
    std::memcpy(out->origin.data(), h.origin, 16);
    out->batch_id = h.batch_id;
    h.server[kServerField - 1] = '\0';
    out->server = h.server;
    out->rows.resize(h.count);
    if (h.count > 0)
        std::memcpy(static_cast<void *>(out->rows.data()), data + sizeof h, h.count * sizeof(LogRecord));
    return SpoolRead::ok;
}

std::string spool_file_name(uint64_t sequence) {
    char name[32];
    std::snprintf(name, sizeof name, "%016llx.batch", static_cast<unsigned long long>(sequence));
    return name;
}

bool parse_spool_file_name(const char *name, uint64_t *sequence) {
    if (std::strlen(name) != 22 || std::strcmp(name + 16, ".batch") != 0)
        return false;
    uint64_t v = 0;
    for (int i = 0; i < 16; ++i) {
        char c = name[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return false;
        v = v << 4 | static_cast<uint64_t>(d);
    }
    *sequence = v;
    return true;
}

} // namespace flint
