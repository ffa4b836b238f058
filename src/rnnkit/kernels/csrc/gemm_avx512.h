/* A float32 GEMM with AVX-512 register tiles, used by the AVX-512 build (RK_VARIANT 2) in
 * place of MKL's sgemm where MKL would not run its own AVX-512 code (rnnkit.kernels.native
 * decides; MKL picks its kernels by CPU vendor and runs AVX2 code on AMD processors).
 *
 * Row-major  c = alpha op(a) op(b) + beta c  (op(x) = x^T when t), the contract of rk_gemm.
 * c is computed in tiles of OG_MR rows x up to OG_NV * 16 columns held in zmm registers:
 *     for each k block (OG_KC):  for each column panel:  for each row tile:
 *         acc[i][v] += a(i, p) * b[p, v*16 .. v*16+15]     (p in the k block)
 * a is read where it lies (a(i, p) at a[i*rsa + p*csa], broadcast one value at a time),
 * b row by row along n: op(b) = b^T is first copied into a contiguous (k, n) buffer. Column
 * edges use masked loads and stores; row edges a narrower tile (every (rows, vectors)
 * shape is its own inlined instance, so the accumulators stay in registers). Rows of c
 * split over OpenMP threads when the product is large enough (og_nthreads). */
#include <immintrin.h>

/* FN(R, C, ...) with the column count C (1..4) a constant: one inlined instance of a tile
 * function per (rows, columns) shape, so its loops unroll and its accumulators stay in
 * registers */
#define OG_COLS(FN, R, C, ...)                                                            \
    switch (C) {                                                                          \
    case 4: FN(R, 4, __VA_ARGS__); break;                                                 \
    case 3: FN(R, 3, __VA_ARGS__); break;                                                 \
    case 2: FN(R, 2, __VA_ARGS__); break;                                                 \
    default: FN(R, 1, __VA_ARGS__); break;                                                \
    }

#define OG_MR 6
#define OG_NV 4
#define OG_NR (OG_NV * 16)
#define OG_KC 256
/* products of at least this many multiply-adds split over threads */
#define OG_PAR_MIN (1 << 20)

/* threads of the GEMM for calls from outside a parallel region (0: OpenMP's default);
 * per calling thread, as MKL_Set_Num_Threads_Local */
static __thread int og_threads_local = 0;

static inline __attribute__((always_inline)) void og_tile(
    const int mr, const int nv, __mmask16 last, int64_t kc, const float *a, int64_t rsa,
    int64_t csa, const float *b, int64_t ldb, float *c, int64_t ldc, float alpha, float beta,
    int first) {
    __m512 acc[OG_MR][OG_NV];
#pragma GCC unroll 6
    for (int i = 0; i < OG_MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < OG_NV; v++) acc[i][v] = _mm512_setzero_ps();
    for (int64_t p = 0; p < kc; p++) {
        const float *bp = b + p * ldb;
        __m512 bv[OG_NV];
#pragma GCC unroll 4
        for (int v = 0; v < OG_NV; v++)
            if (v < nv) bv[v] = v == nv - 1 ? _mm512_maskz_loadu_ps(last, bp + 16 * v)
                                            : _mm512_loadu_ps(bp + 16 * v);
        const float *ap = a + p * csa;
#pragma GCC unroll 6
        for (int i = 0; i < OG_MR; i++) {
            if (i < mr) {
                __m512 av = _mm512_set1_ps(ap[i * rsa]);
#pragma GCC unroll 4
                for (int v = 0; v < OG_NV; v++)
                    if (v < nv) acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
            }
        }
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(first ? beta : 1.0f);
    int keep = !first || beta != 0.0f;
#pragma GCC unroll 6
    for (int i = 0; i < OG_MR; i++) {
        if (i >= mr) continue;
        float *ci = c + i * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < OG_NV; v++) {
            if (v >= nv) continue;
            __mmask16 mk = v == nv - 1 ? last : (__mmask16)0xFFFF;
            __m512 r = _mm512_mul_ps(va, acc[i][v]);
            if (keep) r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mk, ci + 16 * v), r);
            _mm512_mask_storeu_ps(ci + 16 * v, mk, r);
        }
    }
}

#define OG_ARGS last, kc, a, rsa, csa, b, ldb, c, ldc, alpha, beta, first
#define OG_CASE(MR)                                                                       \
    case MR:                                                                              \
        OG_COLS(og_tile, MR, nv, OG_ARGS)                                                 \
        break;

static void og_tile_any(int mr, int nv, __mmask16 last, int64_t kc, const float *a,
                        int64_t rsa, int64_t csa, const float *b, int64_t ldb, float *c,
                        int64_t ldc, float alpha, float beta, int first) {
    switch (mr) {
        OG_CASE(6)
        OG_CASE(5)
        OG_CASE(4)
        OG_CASE(3)
        OG_CASE(2)
        default:
            OG_CASE(1)
    }
}
#undef OG_CASE
#undef OG_ARGS

/* rows [i0, i1) of c over every k block and column panel */
static void og_rows(int64_t i0, int64_t i1, int64_t n, int64_t k, const float *a, int64_t rsa,
                    int64_t csa, const float *b, int64_t ldb, float *c, int64_t ldc,
                    float alpha, float beta) {
    for (int64_t p0 = 0; p0 < k; p0 += OG_KC) {
        int64_t kc = k - p0 < OG_KC ? k - p0 : OG_KC;
        for (int64_t j0 = 0; j0 < n; j0 += OG_NR) {
            int64_t nr = n - j0 < OG_NR ? n - j0 : OG_NR;
            int nv = (int)((nr + 15) / 16);
            int rem = (int)(nr - 16 * (nv - 1));
            __mmask16 last = (__mmask16)(rem == 16 ? 0xFFFF : (1u << rem) - 1);
            for (int64_t i = i0; i < i1; i += OG_MR) {
                int mr = (int)(i1 - i < OG_MR ? i1 - i : OG_MR);
                og_tile_any(mr, nv, last, kc, a + i * rsa + p0 * csa, rsa, csa,
                            b + p0 * ldb + j0, ldb, c + i * ldc + j0, ldc, alpha, beta,
                            p0 == 0);
            }
        }
    }
}

/* c[i, j] = alpha sum_p a[i, p] b[j, p] + beta c (op(b) = b^T with both operands' rows
 * contiguous along p): tiles of OG_DM x OG_DN dot products, p in the vector lanes, each
 * tile reduced across lanes once at the end; for long products (k >= OG_DOT_MIN_K) */
#define OG_DM 4
#define OG_DN 4
#define OG_DOT_MIN_K 64

static inline __attribute__((always_inline)) void og_dot_tile(
    const int mr, const int nr, int64_t k, const float *a, int64_t lda, const float *b,
    int64_t ldb, float *c, int64_t ldc, float alpha, float beta) {
    __m512 acc[OG_DM][OG_DN];
#pragma GCC unroll 4
    for (int i = 0; i < OG_DM; i++)
#pragma GCC unroll 4
        for (int j = 0; j < OG_DN; j++) acc[i][j] = _mm512_setzero_ps();
    for (int64_t p = 0; p < k; p += 16) {
        __mmask16 mk = k - p >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (k - p)) - 1);
        __m512 av[OG_DM], bv[OG_DN];
#pragma GCC unroll 4
        for (int i = 0; i < OG_DM; i++)
            if (i < mr) av[i] = _mm512_maskz_loadu_ps(mk, a + i * lda + p);
#pragma GCC unroll 4
        for (int j = 0; j < OG_DN; j++)
            if (j < nr) bv[j] = _mm512_maskz_loadu_ps(mk, b + j * ldb + p);
#pragma GCC unroll 4
        for (int i = 0; i < OG_DM; i++)
#pragma GCC unroll 4
            for (int j = 0; j < OG_DN; j++)
                if (i < mr && j < nr) acc[i][j] = _mm512_fmadd_ps(av[i], bv[j], acc[i][j]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < OG_DM; i++)
#pragma GCC unroll 4
        for (int j = 0; j < OG_DN; j++)
            if (i < mr && j < nr) {
                float r = alpha * _mm512_reduce_add_ps(acc[i][j]);
                c[i * ldc + j] = beta == 0.0f ? r : r + beta * c[i * ldc + j];
            }
}

#define OG_DOT_ARGS k, a + i * lda, lda, b + j * ldb, ldb, c + i * ldc + j, ldc, alpha, beta
#define OG_DOT_CASE(MR)                                                                   \
    case MR:                                                                              \
        OG_COLS(og_dot_tile, MR, nr, OG_DOT_ARGS)                                         \
        break;

/* rows [i0, i1) of c = alpha a b^T + beta c */
static void og_dot_rows(int64_t i0, int64_t i1, int64_t n, int64_t k, const float *a,
                        int64_t lda, const float *b, int64_t ldb, float *c, int64_t ldc,
                        float alpha, float beta) {
    for (int64_t i = i0; i < i1; i += OG_DM) {
        int mr = (int)(i1 - i < OG_DM ? i1 - i : OG_DM);
        for (int64_t j = 0; j < n; j += OG_DN) {
            int nr = (int)(n - j < OG_DN ? n - j : OG_DN);
            switch (mr) {
                OG_DOT_CASE(4)
                OG_DOT_CASE(3)
                OG_DOT_CASE(2)
                default:
                    OG_DOT_CASE(1)
            }
        }
    }
}
#undef OG_DOT_CASE
#undef OG_DOT_ARGS

/* the threads for a product of m rows in tiles of `rows` (1 inside a parallel region) */
static int og_nthreads(int64_t m, int64_t n, int64_t k, int64_t rows) {
    int nt = 1;
#ifdef _OPENMP
    if (m * n * k >= OG_PAR_MIN && !omp_in_parallel())
        nt = og_threads_local > 0 ? og_threads_local : omp_get_max_threads();
#endif
    int64_t tiles = (m + rows - 1) / rows;
    return nt > tiles ? (int)tiles : nt;
}

static void rk_own_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha,
                         const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                         float *c, int64_t ldc) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) { /* c = beta c */
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j];
        return;
    }
    if (tb && !ta && k >= OG_DOT_MIN_K) {
        int nt = og_nthreads(m, n, k, OG_DM);
        int64_t tiles = (m + OG_DM - 1) / OG_DM;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
        for (int t = 0; t < nt; t++) {
            int64_t i0 = tiles * t / nt * OG_DM, i1 = tiles * (t + 1) / nt * OG_DM;
            og_dot_rows(i0, i1 < m ? i1 : m, n, k, a, lda, b, ldb, c, ldc, alpha, beta);
        }
        return;
    }
    float *bt = 0;
    if (tb) { /* op(b) (k, n) contiguous, copied in 16 x 16 blocks: b is (n, k) */
        bt = (float *)malloc((size_t)(k * n) * sizeof(float));
        if (!bt) {
            rk_alloc_failed();
            return;
        }
        for (int64_t j0 = 0; j0 < n; j0 += 16)
            for (int64_t p0 = 0; p0 < k; p0 += 16)
                for (int64_t j = j0; j < n && j < j0 + 16; j++)
                    for (int64_t p = p0; p < k && p < p0 + 16; p++) bt[p * n + j] = b[j * ldb + p];
        b = bt;
        ldb = n;
    }
    int64_t rsa = ta ? 1 : lda, csa = ta ? lda : 1;
    int nt = og_nthreads(m, n, k, OG_MR);
    int64_t tiles = (m + OG_MR - 1) / OG_MR;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int t = 0; t < nt; t++) {
        int64_t i0 = tiles * t / nt * OG_MR, i1 = tiles * (t + 1) / nt * OG_MR;
        og_rows(i0, i1 < m ? i1 : m, n, k, a, rsa, csa, b, ldb, c, ldc, alpha, beta);
    }
    free(bt);
}
