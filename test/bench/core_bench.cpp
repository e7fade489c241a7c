// Micro-benchmarks of the Postgres-free core: parse, checksum, hash, scope match.
#include <benchmark/benchmark.h>

#include "crc32.hpp"
#include "digest.hpp"
#include "scopes.hpp"
#include "token.hpp"

using namespace flint;

namespace {
std::string sample_token() {
    Uuid id;
    SecretBytes secret;
    random_bytes(id.data(), id.size());
    random_bytes(secret.data(), secret.size());
    return format_token(Mode::live, id, secret);
}
} // namespace

static void BM_ParseToken(benchmark::State &state) {
    std::string token = sample_token();
    ParsedToken parsed;
    for (auto _ : state)
        benchmark::DoNotOptimize(parse_token(token, parsed));
}
BENCHMARK(BM_ParseToken);

static void BM_Crc32Token(benchmark::State &state) {
    std::string token = sample_token();
    for (auto _ : state)
        benchmark::DoNotOptimize(crc32(token.data(), 63));
}
BENCHMARK(BM_Crc32Token);

static void BM_Sha256Reused(benchmark::State &state) {
    std::string token = sample_token();
    Sha256 hasher;
    for (auto _ : state)
        benchmark::DoNotOptimize(hasher.hash(token));
}
BENCHMARK(BM_Sha256Reused);

static void BM_ParseAndHash(benchmark::State &state) {
    std::string token = sample_token();
    ParsedToken parsed;
    Sha256 hasher;
    for (auto _ : state) {
        benchmark::DoNotOptimize(parse_token(token, parsed));
        benchmark::DoNotOptimize(hasher.hash(token));
    }
}
BENCHMARK(BM_ParseAndHash);

static void BM_ScopeGrants(benchmark::State &state) {
    std::vector<std::string> held = {"customers:read", "payments:write", "refunds:*"};
    for (auto _ : state)
        benchmark::DoNotOptimize(scope_grants(held, "refunds:write"));
}
BENCHMARK(BM_ScopeGrants);

static void BM_FormatToken(benchmark::State &state) {
    Uuid id{};
    SecretBytes secret{};
    for (auto _ : state)
        benchmark::DoNotOptimize(format_token(Mode::live, id, secret));
}
BENCHMARK(BM_FormatToken);

BENCHMARK_MAIN();
