#include "base62.hpp"

#include <cstring>
#include <vector>

namespace flint::base62 {

int digit(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'Z')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 36;
    return -1;
}

void encode(const uint8_t *bytes, size_t n, char *out, size_t width) {
    // Schoolbook division of the big-endian number by 62, least significant digit first.
    uint8_t work[64];
    std::memcpy(work, bytes, n);
    for (size_t pos = width; pos-- > 0;) {
        unsigned remainder = 0;
        for (size_t i = 0; i < n; ++i) {
            unsigned acc = (remainder << 8) | work[i];
            work[i] = static_cast<uint8_t>(acc / 62);
            remainder = acc % 62;
        }
        out[pos] = kAlphabet[remainder];
    }
}

std::string encode(const uint8_t *bytes, size_t n) {
    std::string out(encoded_width(n), '0');
    encode(bytes, n, out.data(), out.size());
    return out;
}

bool decode(std::string_view text, uint8_t *bytes, size_t n) {
    std::memset(bytes, 0, n);
    for (char c : text) {
        int d = digit(c);
        if (d < 0)
            return false;
        // bytes = bytes * 62 + d, detecting overflow out of the top byte.
        unsigned carry = static_cast<unsigned>(d);
        for (size_t i = n; i-- > 0;) {
            unsigned acc = bytes[i] * 62u + carry;
            bytes[i] = static_cast<uint8_t>(acc & 0xff);
            carry = acc >> 8;
        }
        if (carry != 0)
            return false;
    }
    return true;
}

} // namespace flint::base62
