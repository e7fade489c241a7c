// CRC-32 (IEEE 802.3, as zlib's crc32). Postgres-free.
#pragma once
#include <cstddef>
#include <cstdint>

namespace flint {
uint32_t crc32(const void *data, size_t len);
}
