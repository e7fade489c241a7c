#include "digest.hpp"

#include <stdexcept>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

namespace flint {

struct Sha256::Impl {
    EVP_MD *md = nullptr;
    EVP_MD_CTX *ctx = nullptr;
};

Sha256::Sha256() : impl_(new Impl) {
    impl_->md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    impl_->ctx = EVP_MD_CTX_new();
    if (!impl_->md || !impl_->ctx) {
        EVP_MD_free(impl_->md);
        EVP_MD_CTX_free(impl_->ctx);
        delete impl_;
        throw std::runtime_error("OpenSSL could not provide SHA-256");
    }
}

Sha256::~Sha256() {
    EVP_MD_CTX_free(impl_->ctx);
    EVP_MD_free(impl_->md);
    delete impl_;
}

Digest Sha256::hash(std::string_view data) {
    Digest out{};
    unsigned int len = 0;
    if (EVP_DigestInit_ex2(impl_->ctx, impl_->md, nullptr) != 1 ||
        EVP_DigestUpdate(impl_->ctx, data.data(), data.size()) != 1 ||
        EVP_DigestFinal_ex(impl_->ctx, out.data(), &len) != 1 || len != out.size())
        throw std::runtime_error("SHA-256 failed");
    return out;
}

Digest sha256(std::string_view data) {
    thread_local Sha256 hasher;
    return hasher.hash(data);
}

bool digest_equal(const Digest &a, const Digest &b) { return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0; }

void random_bytes(uint8_t *buf, size_t len) {
    if (RAND_bytes(buf, static_cast<int>(len)) != 1)
        throw std::runtime_error("the OpenSSL CSPRNG could not produce random bytes");
}

} // namespace flint
