// Fixed-width base62 of big-endian byte strings. Postgres-free.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace flint::base62 {

inline constexpr char kAlphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

// Characters needed to write any n-byte value: ceil(8n / log2(62)).
constexpr size_t encoded_width(size_t nbytes) {
    // 62^k >= 256^n  <=>  k >= n * 1.34366...; computed exactly for the sizes we use.
    size_t k = 0;
    // Compare k*log(62) >= n*log(256) with integer math: 5.9541963 bits per char.
    while (k * 59541963ULL < nbytes * 8ULL * 10000000ULL)
        ++k;
    return k;
}

// Writes `width` base62 characters for the n-byte big-endian value.
void encode(const uint8_t *bytes, size_t n, char *out, size_t width);
std::string encode(const uint8_t *bytes, size_t n);

namespace detail {
constexpr std::array<int8_t, 256> make_digits() {
    std::array<int8_t, 256> t{};
    for (auto &v : t)
        v = -1;
    for (int i = 0; i < 62; ++i)
        t[static_cast<unsigned char>(kAlphabet[i])] = static_cast<int8_t>(i);
    return t;
}
inline constexpr auto kDigits = make_digits();
} // namespace detail

// Digit value of c, or -1 outside the alphabet. Inline: verification calls it
// for every character of every token.
inline int digit(char c) { return detail::kDigits[static_cast<unsigned char>(c)]; }

// Decodes exactly `text` into n big-endian bytes. False for a character outside
// the alphabet or a value that does not fit in n bytes (no aliases).
bool decode(std::string_view text, uint8_t *bytes, size_t n);

} // namespace flint::base62
