#include "base62.hpp"

#include <array>
#include <cstring>
#include <vector>

namespace flint::base62 {

namespace {
// acc * 62 + d fits in n bytes  <=>  acc < q, or acc == q and d <= r,
// where q and r are the largest n-byte value divided by 62. Computed here
// once for every n: a 128-bit division per call showed in the profile.
struct Bound {
    unsigned __int128 q;
    unsigned r;
};
constexpr std::array<Bound, 17> make_bounds() {
    std::array<Bound, 17> b{};
    for (size_t n = 1; n <= 16; ++n) {
        unsigned __int128 limit =
            n == 16 ? ~static_cast<unsigned __int128>(0) : (static_cast<unsigned __int128>(1) << (8 * n)) - 1;
        b[n] = {limit / 62, static_cast<unsigned>(limit % 62)};
    }
    return b;
}
constexpr auto kBounds = make_bounds();
} // namespace

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
    // Up to 16 bytes fit a 128-bit accumulator: one multiply-add per character.
    if (n >= 1 && n <= 16) {
        unsigned __int128 acc = 0;
        const unsigned __int128 q = kBounds[n].q;
        const unsigned r = kBounds[n].r;
        for (char c : text) {
            int d = digit(c);
            if (d < 0 || acc > q || (acc == q && static_cast<unsigned>(d) > r))
                return false;
            acc = acc * 62 + static_cast<unsigned>(d);
        }
        for (size_t i = n; i-- > 0;) {
            bytes[i] = static_cast<uint8_t>(acc & 0xff);
            acc >>= 8;
        }
        return true;
    }
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
