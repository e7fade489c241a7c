#include "log_record.hpp"

#include <cstring>

#include "scopes.hpp"

namespace flint {

const char *log_source_name(LogSource source) {
    switch (source) {
    case LogSource::verify: return "verify";
    case LogSource::check: return "check";
    case LogSource::authenticate: return "authenticate";
    case LogSource::require_scope: return "require_scope";
    case LogSource::guarded_write: return "guarded_write";
    case LogSource::report_leaked: return "report_leaked";
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

void log_scope(LogRecord &record, std::optional<std::string_view> scope) {
    ScopeName shape;
    if (scope && parse_scope(*scope, shape))
        copy_field(record.scope, scope->data(), scope->size());
}

namespace {
void put16(std::string &out, uint16_t v) {
    const char b[2] = {static_cast<char>(v >> 8), static_cast<char>(v)};
    out.append(b, 2);
}
void put32(std::string &out, uint32_t v) {
    const char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
                       static_cast<char>(v)};
    out.append(b, 4);
}
void put64(std::string &out, uint64_t v) {
    put32(out, static_cast<uint32_t>(v >> 32));
    put32(out, static_cast<uint32_t>(v));
}
void put_null(std::string &out) { put32(out, 0xFFFFFFFFu); }
void put_bytes(std::string &out, const void *data, size_t len) {
    put32(out, static_cast<uint32_t>(len));
    out.append(static_cast<const char *>(data), len);
}
void put_text(std::string &out, const char *s) { // empty: NULL
    size_t len = std::strlen(s);
    if (len == 0)
        put_null(out);
    else
        put_bytes(out, s, len);
}
void put_uuid(std::string &out, bool present, const Uuid &id) {
    if (present)
        put_bytes(out, id.data(), id.size());
    else
        put_null(out);
}
void put_inet(std::string &out, uint8_t family, const uint8_t *ip) {
    if (family != 4 && family != 6) {
        put_null(out);
        return;
    }
    // inet_recv: family (PGSQL_AF_INET = 2, PGSQL_AF_INET6 = 3), bits, is_cidr, length, address
    const uint8_t nbytes = family == 4 ? 4 : 16;
    put32(out, 4u + nbytes);
    out.push_back(static_cast<char>(family == 4 ? 2 : 3));
    out.push_back(static_cast<char>(nbytes * 8));
    out.push_back('\0');
    out.push_back(static_cast<char>(nbytes));
    out.append(reinterpret_cast<const char *>(ip), nbytes);
}
} // namespace

std::string encode_copy_binary(const LogRecord *rows, size_t count, bool with_cost, const uint32_t *order,
                               const char *server) {
    std::string out;
    out.reserve(19 + count * 260 + 2);
    out.append("PGCOPY\n\xff\r\n\0", 11);
    put32(out, 0); // flags
    put32(out, 0); // header extension length
    for (size_t i = 0; i < count; ++i) {
        const LogRecord &r = rows[order ? order[i] : i];
        put16(out, static_cast<uint16_t>(13 + (with_cost ? 1 : 0) + (server ? 1 : 0)));
        put32(out, 8);
        put64(out, static_cast<uint64_t>(r.at));
        put_uuid(out, r.has_key_id, r.key_id);
        put_text(out, r.display_prefix);
        put_uuid(out, r.has_merchant_id, r.merchant_id);
        put_uuid(out, r.has_requested_merchant, r.requested_merchant);
        put_text(out, r.scope);
        put_text(out, code_name(r.outcome));
        put_text(out, code_sqlstate(r.outcome));
        put_inet(out, r.client_family, r.client_ip);
        put_text(out, r.application_name);
        put_text(out, r.request_id);
        put32(out, 4);
        put32(out, static_cast<uint32_t>(r.backend_pid));
        put_text(out, log_source_name(r.source));
        if (with_cost) {
            put32(out, 4);
            put32(out, static_cast<uint32_t>(r.cost));
        }
        if (server)
            put_text(out, server);
    }
    put16(out, 0xFFFF); // trailer
    return out;
}

} // namespace flint
