/* rnnkit's CPU kernels, compiled by the install step (setup.py builds this file with the C
 * compiler of the machine; nothing is compiled at first use). Loaded with ctypes by
 * rnnkit/kernels/native.py, which documents every entry point; the equations are those of
 * rnnkit/cells.py and the Python docstrings of kernels/lanes.py, kernels/blas.py and
 * rnnkit/planner.py. The body (kernels.h) is included twice: float32 and float64.
 *
 * BLAS: the Fortran ?gemm_ whose addresses rk_set_blas receives (torch's MKL, or SciPy's
 * BLAS); a plain loop when none was given. Threads: OpenMP (the runtime torch loaded),
 * with the thread count passed by the caller on every call.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define RK_ABI_VERSION 6
/* setup.py compiles this file three times on x86-64: the baseline (librnnkit_kernels.so),
 * with AVX2 + FMA (librnnkit_kernels_avx2.so, RK_VARIANT 1) and with AVX-512
 * (librnnkit_kernels_avx512.so, RK_VARIANT 2, which adds the own float32 GEMM of
 * gemm_avx512.h); rnnkit.kernels.native loads the widest that rk_cpu_has_avx512() /
 * rk_cpu_has_avx2() of the baseline says the CPU runs. */
#ifndef RK_VARIANT
#define RK_VARIANT 0
#endif
/* recurrent weights with at least this many entries (units x gates*units) take the per-step
 * products of the lanes kernels through the GEMM (one thread per chunk); smaller ones
 * through the compiled loop, faster there (rnnkit.kernels.lanes.GEMM_MIN reads it). The
 * AVX-512 build's loop is faster up to LSTM(8) (256 weights: W2 epoch 0.132 s against
 * 0.150 s through the own GEMM), its GEMM from LSTM(16) (1,024: 0.325 s against 0.408 s). */
#if RK_VARIANT == 2
#define RK_GEMM_MIN 512
#else
#define RK_GEMM_MIN 256
#endif

#define RK_CLONES

int rk_variant(void) { return RK_VARIANT; }

int rk_cpu_has_avx512(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#else
    return 0;
#endif
}

/* 1 when the CPU is an Intel one (MKL then runs its own code for the CPU's widest
 * vectors; elsewhere it runs AVX2 code at most) */
int rk_cpu_is_intel(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_is("intel");
#else
    return 0;
#endif
}

int rk_cpu_has_avx2(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

int rk_gemm_min(void) { return RK_GEMM_MIN; }

typedef void (*rk_sgemm_t)(const char *, const char *, const int64_t *, const int64_t *,
                           const int64_t *, const float *, const float *, const int64_t *,
                           const float *, const int64_t *, const float *, float *,
                           const int64_t *);
typedef void (*rk_dgemm_t)(const char *, const char *, const int64_t *, const int64_t *,
                           const int64_t *, const double *, const double *, const int64_t *,
                           const double *, const int64_t *, const double *, double *,
                           const int64_t *);
typedef int (*rk_threads_local_t)(int);

static rk_sgemm_t g_sgemm = 0;
static rk_dgemm_t g_dgemm = 0;
static rk_threads_local_t g_threads_local = 0;

int rk_abi_version(void) { return RK_ABI_VERSION; }

/* Set when a kernel could not allocate its scratch (its outputs are then not written);
 * rk_take_alloc_failure returns and clears it, and the Python caller raises MemoryError. */
static volatile int g_alloc_failed = 0;

static void rk_alloc_failed(void) { g_alloc_failed = 1; }

/* n bytes on a 64-byte (cache line, AVX-512 vector) boundary, freed with free(): a large
 * malloc lies 16 bytes past a page boundary, so every vector load of a row would straddle
 * two cache lines. calloc-like when zero is set. */
static void *rk_alloc64(size_t n, int zero) {
    size_t m = (n + 63) / 64 * 64;
    void *v = aligned_alloc(64, m ? m : 64);
    if (v && zero) memset(v, 0, m);
    return v;
}

int rk_take_alloc_failure(void) {
    int f = g_alloc_failed;
    g_alloc_failed = 0;
    return f;
}

/* Registers the BLAS (any pointer may be 0: a plain loop / no per-thread setting). */
void rk_set_blas(void *sgemm, void *dgemm, void *threads_local) {
    g_sgemm = (rk_sgemm_t)sgemm;
    g_dgemm = (rk_dgemm_t)dgemm;
    g_threads_local = (rk_threads_local_t)threads_local;
}

int rk_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

#if RK_VARIANT == 1
#include <immintrin.h>

/* In-register transpose of an 8 x 8 float block: r[k] lane j becomes r[j] lane k. */
static inline __attribute__((always_inline)) void rk_tr8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int k = 0; k < 4; k++) {
        t[2 * k] = _mm256_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm256_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    for (int k = 0; k < 2; k++) {
        u[4 * k] = _mm256_shuffle_ps(t[4 * k], t[4 * k + 2], 0x44);
        u[4 * k + 1] = _mm256_shuffle_ps(t[4 * k], t[4 * k + 2], 0xEE);
        u[4 * k + 2] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0x44);
        u[4 * k + 3] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0xEE);
    }
    for (int j = 0; j < 4; j++) {
        r[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
        r[4 + j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
    }
}
#endif

#if RK_VARIANT == 2
#include "gemm_avx512.h"

/* In-register transpose of a 16 x 16 float block: r[k] lane j becomes r[j] lane k
 * (unpack pairs, then pairs of pairs, then 128-bit lanes twice; tests hold the gathers
 * built on it to the reference). */
static inline __attribute__((always_inline)) void rk_tr16(__m512 r[16]) {
    __m512 t[16];
    for (int k = 0; k < 8; k++) {
        t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    for (int k = 0; k < 4; k++) {
        __m512d a = _mm512_castps_pd(t[4 * k]), b = _mm512_castps_pd(t[4 * k + 1]);
        __m512d c = _mm512_castps_pd(t[4 * k + 2]), d = _mm512_castps_pd(t[4 * k + 3]);
        r[4 * k] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 4; j++) {
            t[8 * k + j] = _mm512_shuffle_f32x4(r[8 * k + j], r[8 * k + 4 + j], 0x88);
            t[8 * k + 4 + j] = _mm512_shuffle_f32x4(r[8 * k + j], r[8 * k + 4 + j], 0xdd);
        }
    for (int j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
    }
}
/* 1: rk_gemm's float32 products run rk_own_sgemm instead of the registered sgemm */
static int g_own_gemm = 0;
#endif

/* 1 selects this build's own float32 GEMM (the AVX-512 build only; returns whether it is
 * in use). */
int rk_use_own_gemm(int on) {
#if RK_VARIANT == 2
    g_own_gemm = on != 0;
    return g_own_gemm;
#else
    (void)on;
    return 0;
#endif
}

/* The calling thread's BLAS threads become n; returns the previous count. */
static int rk_blas_threads_local(int n) {
#if RK_VARIANT == 2
    int old_own = og_threads_local;
    og_threads_local = n;
    if (g_own_gemm) return old_own;
#endif
    return g_threads_local ? g_threads_local(n) : 0;
}

int rk_blas_threads_local_call(int n) { return rk_blas_threads_local(n); }

/* tanh as x P(x^2) / Q(x^2) on |x| <= 7.905 (Eigen/XLA's float32 approximation, max abs
 * error 3e-7): branch- and call-free, so the loops over lanes vectorise. */
#define RK_TANH_BODY(T)                                                                  \
    const T lim = (T)7.90531110763549805;                                                \
    x = x < -lim ? -lim : (x > lim ? lim : x);                                           \
    T x2 = x * x;                                                                        \
    T p = x2 * (T)-2.76076847742355e-16 + (T)2.00018790482477e-13;                       \
    p = x2 * p + (T)-8.60467152213735e-11;                                               \
    p = x2 * p + (T)5.12229709037114e-08;                                                \
    p = x2 * p + (T)1.48572235717979e-05;                                                \
    p = x2 * p + (T)6.37261928875436e-04;                                                \
    p = x2 * p + (T)4.89352455891786e-03;                                                \
    T q = x2 * (T)1.19825839466702e-06 + (T)1.18534705686654e-04;                        \
    q = x2 * q + (T)2.26843463243900e-03;                                                \
    q = x2 * q + (T)4.89352518554385e-03;                                                \
    return x * p / q;

static inline __attribute__((always_inline)) float rk_tanh_f32(float x) { RK_TANH_BODY(float) }
static inline __attribute__((always_inline)) double rk_tanh_f64(double x) { RK_TANH_BODY(double) }

#define R float
#define S(name) name##_f32
#define RK_GEMM_FN g_sgemm
#define RK_OWN_GEMM (RK_VARIANT == 2)
#define RK_TR16 (RK_VARIANT == 2)
#define RK_TR8 (RK_VARIANT == 1)
#include "kernels.h"
#undef R
#undef S
#undef RK_GEMM_FN
#undef RK_OWN_GEMM
#undef RK_TR16
#undef RK_TR8

#define R double
#define S(name) name##_f64
#define RK_GEMM_FN g_dgemm
#define RK_OWN_GEMM 0
#define RK_TR16 0
#define RK_TR8 0
#include "kernels.h"
#undef R
#undef S
#undef RK_GEMM_FN
#undef RK_OWN_GEMM
#undef RK_TR16
#undef RK_TR8
