/* Raw ISA-L peer for scripts/bench-erasure.sh: the same work as HyperMesh's ErasureBenchmark,
 * calling ISA-L directly. Encode k data shards into m parity shards (Cauchy matrix, tables built
 * once), then rebuild `lost` data shards from the next k shards (decode tables built once).
 * Throughput is k × shard size bytes per call, in GB/s (1e9).
 *
 * usage: isal_bench K M SHARD_SIZE LOST SECONDS
 */
#include <isa-l/erasure_code.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s K M SHARD_SIZE LOST SECONDS\n", argv[0]);
        return 2;
    }
    int k = atoi(argv[1]), m = atoi(argv[2]), len = atoi(argv[3]), lost = atoi(argv[4]);
    double seconds = atof(argv[5]);
    if (k < 1 || m < 1 || k + m > 255 || len < 1 || lost < 1 || lost > m || lost > k) {
        fprintf(stderr, "bad parameters\n");
        return 2;
    }
    int n = k + m;
    unsigned char *shards[256], *rebuilt[256], *sources[256];
    uint64_t seed = 1;
    for (int i = 0; i < n; i++) {
        shards[i] = aligned_alloc(64, (size_t)len);
        if (i < k)
            for (int j = 0; j < len; j += 8) {
                uint64_t v = splitmix(&seed);
                memcpy(shards[i] + j, &v, (size_t)(len - j < 8 ? len - j : 8));
            }
    }
    for (int i = 0; i < lost; i++) rebuilt[i] = aligned_alloc(64, (size_t)len);

    unsigned char *a = malloc((size_t)n * k), *g = malloc(32u * k * n);
    gf_gen_cauchy1_matrix(a, n, k);
    ec_init_tables(k, m, a + k * k, g);

    double bytes = (double)k * len;
    ec_encode_data(len, k, m, g, shards, shards + k); /* warm-up */
    long it = 0;
    double t0 = now_s(), el;
    do {
        for (int r = 0; r < 8; r++) ec_encode_data(len, k, m, g, shards, shards + k);
        it += 8;
        el = now_s() - t0;
    } while (el < seconds);
    double enc = bytes * it / el / 1e9;
    long enc_it = it;

    /* Rebuild data shards 0..lost-1 from shards lost..lost+k-1. */
    unsigned char *b = malloc((size_t)k * k), *inv = malloc((size_t)k * k), *d = malloc((size_t)k * lost);
    unsigned char *dg = malloc(32u * k * lost);
    for (int r = 0; r < k; r++) {
        sources[r] = shards[lost + r];
        memcpy(b + r * k, a + (lost + r) * k, (size_t)k);
    }
    if (gf_invert_matrix(b, inv, k) != 0) {
        fprintf(stderr, "singular\n");
        return 1;
    }
    for (int r = 0; r < lost; r++) memcpy(d + r * k, inv + r * k, (size_t)k);
    ec_init_tables(k, lost, d, dg);
    ec_encode_data(len, k, lost, dg, sources, rebuilt);
    for (int r = 0; r < lost; r++)
        if (memcmp(rebuilt[r], shards[r], (size_t)len) != 0) {
            fprintf(stderr, "rebuild mismatch\n");
            return 1;
        }
    it = 0;
    t0 = now_s();
    do {
        for (int r = 0; r < 8; r++) ec_encode_data(len, k, lost, dg, sources, rebuilt);
        it += 8;
        el = now_s() - t0;
    } while (el < seconds);
    double reb = bytes * it / el / 1e9;
    printf("isal k=%d m=%d shard=%d encode_gbps=%.3f rebuild%d_gbps=%.3f iterations=%ld/%ld\n", k, m, len, enc, lost, reb,
           enc_it, it);
    return 0;
}
