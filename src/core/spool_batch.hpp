// One batch of a standby's log spool, as a file: the rows a standby verified,
// waiting to be forwarded to the primary. Postgres-free.
//
// A batch is written once and never changed: a header (magic, layout, the
// origin and batch id the primary deduplicates on, the server that verified,
// the row count, a CRC-32 over the whole file) and the raw LogRecords. The
// origin is a random id drawn each time a log worker starts spooling; batch
// ids count up from 1 within an origin, so the primary only has to remember
// the highest batch id of each origin to refuse a batch it already has.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "log_record.hpp"

namespace flint {

struct SpoolBatch {
    Uuid origin{};
    uint64_t batch_id = 0;
    std::string server; // who verified the rows (cluster_name or system identifier)
    std::vector<LogRecord> rows;
};

enum class SpoolRead { ok, not_a_batch, other_layout, truncated, bad_checksum };
const char *spool_read_name(SpoolRead r);

// The file's bytes.
std::string encode_spool_batch(const Uuid &origin, uint64_t batch_id, const std::string &server, const LogRecord *rows,
                               size_t count);
// Checks magic, layout, length and checksum before trusting a byte of it.
SpoolRead decode_spool_batch(const char *data, size_t len, SpoolBatch *out);
// The header alone (for sizing the spool at start): rows in the file, or -1.
long spool_batch_rows(const char *data, size_t len);
inline constexpr size_t kSpoolHeaderSize = 128;

// File names sort in the order batches were spooled: a 16-digit hex sequence
// (microseconds since the epoch at spooling, forced to increase) + ".batch".
std::string spool_file_name(uint64_t sequence);
bool parse_spool_file_name(const char *name, uint64_t *sequence);
// The next sequence: the clock, or one past the last if the clock is behind.
inline uint64_t next_spool_sequence(uint64_t last, uint64_t now_us) { return now_us > last ? now_us : last + 1; }

} // namespace flint
