// SHA-256 with a context fetched once and reused, constant-time comparison,
// and CSPRNG bytes (OpenSSL libcrypto). Postgres-free.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace flint {

using Digest = std::array<uint8_t, 32>;

// One per thread/backend: OpenSSL 3's one-shot calls re-fetch the algorithm
// on every call, which costs more than hashing a 69-byte token.
class Sha256 {
  public:
    Sha256();
    ~Sha256();
    Sha256(const Sha256 &) = delete;
    Sha256 &operator=(const Sha256 &) = delete;
    Digest hash(std::string_view data);

  private:
    struct Impl;
    Impl *impl_;
};

// Digest with a per-thread Sha256.
Digest sha256(std::string_view data);

// Equal-time comparison of two digests.
bool digest_equal(const Digest &a, const Digest &b);

// Fills buf from the CSPRNG; throws std::runtime_error if it is not seeded.
void random_bytes(uint8_t *buf, size_t len);

} // namespace flint
