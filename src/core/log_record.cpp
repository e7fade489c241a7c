#include "log_record.hpp"

#include <cstring>

namespace flint {

const char *log_source_name(LogSource source) {
    switch (source) {
    case LogSource::verify: return "verify";
    case LogSource::check: return "check";
    case LogSource::authenticate: return "authenticate";
    case LogSource::require_scope: return "require_scope";
    case LogSource::guarded_write: return "guarded_write";
    }
    return "unknown";
}

void copy_field(char *dst, size_t size, const char *src, size_t len) {
    if (!src) {
        dst[0] = '\0';
        return;
    }
    size_t n = len < size - 1 ? len : size - 1;
    // Do not split a UTF-8 sequence: back up over continuation bytes.
    if (n < len)
        while (n > 0 && (static_cast<unsigned char>(src[n]) & 0xC0) == 0x80)
            --n;
    std::memcpy(dst, src, n);
    dst[n] = '\0';
}

} // namespace flint
