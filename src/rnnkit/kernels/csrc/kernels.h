/* The kernels for one float type, included by rnnkit_kernels.c with R (float or double),
 * S(name) (name_f32 / name_f64) and RK_GEMM_FN (the Fortran ?gemm_ pointer) defined.
 *
 * Layouts follow the Python glue that allocates every array (kernels/lanes.py,
 * kernels/blas.py, rnnkit/planner.py): all arrays are C-contiguous.
 *   lanes ("chunk-major", L = lanes of a chunk, G = gates * H):
 *     xp, dxp, dhp (C,G,T,L); hs, hrp, dys (C,H,T,L): rows along time, as the dW products
 *     read them; gs (C,Tk,G,L), cs, hh (C,Tk,H,L): one block per step, which the step works in
 *     place (time extent Tk = T, or 1 for scratch when nothing is kept); h0, c0, rm, last,
 *     dh0, dc0, dlast (C,H,L); mask (C,T,L) u8.
 *   blas (batch-major): xp, dxp (B,T,G); hs, cs (T+1,B,H); gates (Tg,B,G); hhs (Tg,B,H);
 *     y, dy (B,T,H); h, c, rm, last, dh, dc (B,H); mask (B,T) u8.
 */
#define AI static inline __attribute__((always_inline))
#define RK_TANH S(rk_tanh)
#define RK_SIG(x) ((R)0.5 + (R)0.5 * RK_TANH((R)0.5 * (x)))

/* ------------------------------------------------------------------------------ GEMM */
/* Row-major c = alpha op(a) op(b) + beta c (op(x) = x^T when t), as the column-major
 * c^T = op(b)^T op(a)^T. beta == 0 ignores c's contents, as BLAS does. */
static void S(rk_gemm)(int ta, int tb, int64_t m, int64_t n, int64_t k, R alpha, const R *a,
                       int64_t lda, const R *b, int64_t ldb, R beta, R *c, int64_t ldc) {
    if (m <= 0 || n <= 0) return;
#if RK_OWN_GEMM
    if (g_own_gemm) {
        rk_own_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
#endif
    if (RK_GEMM_FN && k > 0) {
        char ca = tb ? 'T' : 'N', cb = ta ? 'T' : 'N';
        RK_GEMM_FN(&ca, &cb, &n, &m, &k, &alpha, b, &ldb, a, &lda, &beta, c, &ldc);
        return;
    }
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            R s = 0;
            for (int64_t p = 0; p < k; p++)
                s += (ta ? a[p * lda + i] : a[i * lda + p]) * (tb ? b[j * ldb + p] : b[p * ldb + j]);
            c[i * ldc + j] = alpha * s + (beta == 0 ? (R)0 : beta * c[i * ldc + j]);
        }
}

void S(rk_gemm_call)(int ta, int tb, int64_t m, int64_t n, int64_t k, R alpha, const R *a,
                     int64_t lda, const R *b, int64_t ldb, R beta, R *c, int64_t ldc) {
    S(rk_gemm)(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/* sum_i x[i] (and sum_i x[i]^2) in double, in 8 independent partial sums, so the loop
 * vectorises without -ffast-math (one running sum is a chain of dependent adds: the GRU's
 * recurrent-bias gradient sums 154k values per W2 batch that way). */
static double S(sum)(const R *x, int64_t n) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t n8 = n - n % 8;
    for (int64_t i = 0; i < n8; i += 8)
        for (int u = 0; u < 8; u++) acc[u] += (double)x[i + u];
    double s = 0;
    for (int64_t i = n8; i < n; i++) s += (double)x[i];
    return s + ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

static double S(sum_sq)(const R *x, int64_t n) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t n8 = n - n % 8;
    for (int64_t i = 0; i < n8; i += 8)
        for (int u = 0; u < 8; u++) acc[u] += (double)x[i + u] * x[i + u];
    double s = 0;
    for (int64_t i = n8; i < n; i++) s += (double)x[i] * x[i];
    return s + ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* out[j] = sum_i x[i, j] over the rows of x (n x m), accumulated in double, row after row
 * (the loop over j vectorises). */
static void S(col_sums)(const R *x, int64_t n, int64_t m, R *out) {
    double *acc = (double *)calloc((size_t)m, sizeof(double));
    if (!acc) {
        rk_alloc_failed();
        return;
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < m; j++) acc[j] += (double)x[i * m + j];
    for (int64_t j = 0; j < m; j++) out[j] = (R)acc[j];
    free(acc);
}

/* ------------------------------------------------------------------ lanes: one step */
/* acc (G,L) += w^T x with w (H,G), x (H,L); k in blocks of 4. */
AI void S(mm_lanes)(R *restrict acc, const R *restrict w, const R *restrict x, int64_t ng,
                    int64_t nh, int64_t nl) {
    int64_t k4 = nh - nh % 4;
    for (int64_t g = 0; g < ng; g++) {
        R *restrict a = acc + g * nl;
        for (int64_t k = 0; k < k4; k += 4) {
            R w0 = w[k * ng + g], w1 = w[(k + 1) * ng + g], w2 = w[(k + 2) * ng + g],
              w3 = w[(k + 3) * ng + g];
            const R *x0 = x + k * nl, *x1 = x0 + nl, *x2 = x1 + nl, *x3 = x2 + nl;
            for (int64_t i = 0; i < nl; i++)
                a[i] += w0 * x0[i] + w1 * x1[i] + w2 * x2[i] + w3 * x3[i];
        }
        for (int64_t k = k4; k < nh; k++) {
            R wv = w[k * ng + g];
            const R *x0 = x + k * nl;
            for (int64_t i = 0; i < nl; i++) a[i] += wv * x0[i];
        }
    }
}

/* acc (H,L) = w d with w (H,G), d (G,L); g in blocks of 4. */
AI void S(mm_t_lanes)(R *restrict acc, const R *restrict w, const R *restrict d, int64_t ng,
                      int64_t nh, int64_t nl) {
    int64_t g4 = ng - ng % 4;
    for (int64_t k = 0; k < nh; k++) {
        R *restrict a = acc + k * nl;
        for (int64_t i = 0; i < nl; i++) a[i] = 0;
        const R *wk = w + k * ng;
        for (int64_t g = 0; g < g4; g += 4) {
            R w0 = wk[g], w1 = wk[g + 1], w2 = wk[g + 2], w3 = wk[g + 3];
            const R *d0 = d + g * nl, *d1 = d0 + nl, *d2 = d1 + nl, *d3 = d2 + nl;
            for (int64_t i = 0; i < nl; i++)
                a[i] += w0 * d0[i] + w1 * d1[i] + w2 * d2[i] + w3 * d3[i];
        }
        for (int64_t g = g4; g < ng; g++) {
            R wv = wk[g];
            const R *d0 = d + g * nl;
            for (int64_t i = 0; i < nl; i++) a[i] += wv * d0[i];
        }
    }
}

AI void S(rec)(R *acc, const R *w, const R *x, int64_t ng, int64_t nh, int64_t nl, int blas) {
    if (blas)
        S(rk_gemm)(1, 0, ng, nl, nh, 1, w, ng, x, nl, 1, acc, nl);
    else
        S(mm_lanes)(acc, w, x, ng, nh, nl);
}

AI void S(rec_t)(R *acc, const R *w, const R *d, int64_t ng, int64_t nh, int64_t nl, int blas) {
    if (blas)
        S(rk_gemm)(0, 0, nh, nl, ng, 1, w, ng, d, nl, 0, acc, nl);
    else
        S(mm_t_lanes)(acc, w, d, ng, nh, nl);
}

AI void S(simple_step)(const R *restrict z, R *restrict h, const R *restrict m, int relu,
                       int64_t nh, int64_t nl) {
    for (int64_t k = 0; k < nh; k++)
        for (int64_t i = 0; i < nl; i++) {
            R zv = z[k * nl + i];
            R v = relu ? (zv > 0 ? zv : (R)0) : RK_TANH(zv);
            h[k * nl + i] = m[i] != 0 ? v : h[k * nl + i];
        }
}

AI void S(lstm_step)(R *restrict z, R *restrict cc, R *restrict h, const R *restrict m,
                     int64_t nh, int64_t nl) {
    int64_t n = nh * nl;
    for (int64_t j = 0; j < n; j++) {
        z[j] = RK_SIG(z[j]);
        z[n + j] = RK_SIG(z[n + j]);
        z[2 * n + j] = RK_TANH(z[2 * n + j]);
        z[3 * n + j] = RK_SIG(z[3 * n + j]);
    }
    for (int64_t k = 0; k < nh; k++)
        for (int64_t i = 0; i < nl; i++) {
            int64_t j = k * nl + i;
            R cn = z[n + j] * cc[j] + z[j] * z[2 * n + j];
            int real = m[i] != 0;
            R hn = z[3 * n + j] * RK_TANH(cn);
            cc[j] = real ? cn : cc[j];
            h[j] = real ? hn : h[j];
        }
}

AI void S(gru_step)(R *restrict x, const R *restrict p, R *restrict h, const R *restrict m,
                    int64_t nh, int64_t nl) {
    int64_t n = nh * nl;
    for (int64_t k = 0; k < nh; k++)
        for (int64_t i = 0; i < nl; i++) {
            int64_t j = k * nl + i;
            R gz = RK_SIG(x[j] + p[j]);
            R gr = RK_SIG(x[n + j] + p[n + j]);
            R gn = RK_TANH(x[2 * n + j] + gr * p[2 * n + j]);
            x[j] = gz;
            x[n + j] = gr;
            x[2 * n + j] = gn;
            R hn = gz * h[j] + (1 - gz) * gn;
            h[j] = m[i] != 0 ? hn : h[j];
        }
}

/* One forward step on a chunk's lanes: x holds xp_t and becomes z (SimpleRNN) or the
 * post-activation gates; h, cc updated where m is 1; GRU: p gets hr W_h + b_h. hr may be h
 * itself (it is read before h is written). */
AI void S(step)(int kind, R *x, R *p, R *h, R *cc, const R *hr, const R *w, const R *bh,
                const R *m, int relu, int blas, int64_t ng, int64_t nh, int64_t nl) {
    if (kind == 2) {
        for (int64_t g = 0; g < ng; g++)
            for (int64_t i = 0; i < nl; i++) p[g * nl + i] = bh[g];
        S(rec)(p, w, hr, ng, nh, nl, blas);
        S(gru_step)(x, p, h, m, nh, nl);
    } else {
        S(rec)(x, w, hr, ng, nh, nl, blas);
        if (kind == 0)
            S(simple_step)(x, h, m, relu, nh, nl);
        else
            S(lstm_step)(x, cc, h, m, nh, nl);
    }
}

/* dst[c, r, t, :] = src[r, :] for a (C, rows, tk, L) array; get is the reverse. */
AI void S(put)(R *dst, int64_t c, int64_t t, const R *src, int64_t rows, int64_t tk, int64_t nl) {
    for (int64_t r = 0; r < rows; r++)
        memcpy(dst + ((c * rows + r) * tk + t) * nl, src + r * nl, (size_t)nl * sizeof(R));
}

AI void S(get)(R *dst, const R *src, int64_t c, int64_t t, int64_t rows, int64_t tk, int64_t nl) {
    for (int64_t r = 0; r < rows; r++)
        memcpy(dst + r * nl, src + ((c * rows + r) * tk + t) * nl, (size_t)nl * sizeof(R));
}

AI void S(get_mask)(R *m, const uint8_t *mask, int64_t c, int64_t t, int64_t nt, int64_t nl) {
    const uint8_t *src = mask + (c * nt + t) * nl;
    for (int64_t i = 0; i < nl; i++) m[i] = src[i] ? (R)1 : (R)0;
}

/* ------------------------------------------------------------------ lanes: forward */
/* x (G,L) = the table rows of the lanes' ids, transposed: xp_t read straight from the
 * table T (V x G). The AVX-512 (AVX2) float build loads 16 (8) lanes' rows, 16 (8) gates
 * each, and transposes them in registers; otherwise one element at a time. */
AI void S(gather_step)(R *restrict x, const R *restrict table, const int64_t *restrict id,
                       int64_t ng, int64_t nl) {
    int64_t i0 = 0;
#if RK_TR16
    for (; i0 + 16 <= nl; i0 += 16)
        for (int64_t g0 = 0; g0 < ng; g0 += 16) {
            int gn = (int)(ng - g0 < 16 ? ng - g0 : 16);
            __mmask16 mk = (__mmask16)(gn == 16 ? 0xFFFF : (1u << gn) - 1);
            __m512 r[16];
            for (int k = 0; k < 16; k++)
                r[k] = _mm512_maskz_loadu_ps(mk, table + id[i0 + k] * ng + g0);
            rk_tr16(r);
            for (int j = 0; j < gn; j++) _mm512_storeu_ps(x + (g0 + j) * nl + i0, r[j]);
        }
#elif RK_TR8
    for (; i0 + 8 <= nl; i0 += 8)
        for (int64_t g0 = 0; g0 < ng; g0 += 8) {
            int gn = (int)(ng - g0 < 8 ? ng - g0 : 8);
            __m256i mk = _mm256_cmpgt_epi32(_mm256_set1_epi32(gn),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            __m256 r[8];
            for (int k = 0; k < 8; k++) r[k] = _mm256_maskload_ps(table + id[i0 + k] * ng + g0, mk);
            rk_tr8(r);
            for (int j = 0; j < gn; j++) _mm256_storeu_ps(x + (g0 + j) * nl + i0, r[j]);
        }
#endif
    for (int64_t i = i0; i < nl; i++) {
        const R *row = table + id[i] * ng;
        for (int64_t g = 0; g < ng; g++) x[g * nl + i] = row[g];
    }
}

/* One chunk's forward. xp_t is taken from xp (C, G, T, L), or, when table is given (the
 * planner's training step), gathered from T (V x G) by the ids idl (C, T, L) as the step needs it,
 * so no (G, T, L) input array is written and read back. rm NULL (the planner without
 * recurrent dropout): hr = h and hrp is not written (dW_h then reads hs shifted by a step). */
__attribute__((noinline)) static void S(fwd_chunk)(
    int64_t c, int kind, int relu, int blas, int64_t ng, int64_t nt, int64_t nl, int64_t nh,
    int64_t ntk, const R *xp, const R *table, const int64_t *idl, const R *h0,
    const R *c0, const R *w, const R *bh,
    const uint8_t *mask, const R *rm, R *hs, R *hrp, R *cs, R *gs, R *hh, R *last) {
    int64_t hn = nh * nl, gn = ng * nl;
    R *buf = (R *)calloc((size_t)(5 * hn + 2 * gn + nl), sizeof(R));
    if (!buf) {
        rk_alloc_failed();
        return;
    }
    R *h = buf, *cc = h + hn, *hr = cc + hn, *lst = hr + hn, *r = lst + hn;
    R *x = r + hn, *p = x + gn, *m = p + gn;
    int keep = ntk == nt;
    int old = blas ? rk_blas_threads_local(1) : 0;
    memcpy(h, h0 + c * hn, (size_t)hn * sizeof(R));
    if (rm) memcpy(r, rm + c * hn, (size_t)hn * sizeof(R));
    if (kind == 1) memcpy(cc, c0 + c * hn, (size_t)hn * sizeof(R));
    for (int64_t t = 0; t < nt; t++) {
        int64_t tg = keep ? t : 0;
        S(get_mask)(m, mask, c, t, nt, nl);
        if (rm) { /* recurrent dropout: hr = h * r, kept for dW_h */
            for (int64_t j = 0; j < hn; j++) hr[j] = h[j] * r[j];
            S(put)(hrp, c, tg, hr, nh, ntk, nl);
        }
        /* LSTM/GRU: the step's gates are computed in place in their block of gs */
        R *xt = kind ? gs + (c * ntk + tg) * gn : x;
        if (table)
            S(gather_step)(xt, table, idl + (c * nt + t) * nl, ng, nl);
        else
            S(get)(xt, xp, c, t, ng, nt, nl);
        S(step)(kind, xt, p, h, cc, rm ? hr : h, w, bh, m, relu, blas, ng, nh, nl);
        if (kind == 2)
            memcpy(hh + (c * ntk + tg) * hn, p + 2 * hn, (size_t)hn * sizeof(R));
        else if (kind == 1)
            memcpy(cs + (c * ntk + tg) * hn, cc, (size_t)hn * sizeof(R));
        for (int64_t k = 0; k < nh; k++)
            for (int64_t i = 0; i < nl; i++)
                lst[k * nl + i] = m[i] != 0 ? h[k * nl + i] : lst[k * nl + i];
        S(put)(hs, c, t, h, nh, nt, nl);
    }
    memcpy(last + c * hn, lst, (size_t)hn * sizeof(R));
    if (blas) rk_blas_threads_local(old);
    free(buf);
}

static void S(lanes_fwd)(int nthreads, int kind, int relu, int64_t nc, int64_t ng, int64_t nt,
                         int64_t nl, int64_t nh, int64_t ntk, const R *xp, const R *table,
                         const int64_t *idl, const R *h0, const R *c0, const R *w,
                         const R *bh, const uint8_t *mask, const R *rm, R *hs, R *hrp, R *cs,
                         R *gs, R *hh, R *last) {
    int blas = nh * ng >= RK_GEMM_MIN;
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1)
    for (int64_t c = 0; c < nc; c++)
        S(fwd_chunk)(c, kind, relu, blas, ng, nt, nl, nh, ntk, xp, table, idl, h0, c0, w,
                     bh, mask, rm, hs, hrp, cs, gs, hh, last);
}

/* The forward recurrence over nc chunks (in parallel when nthreads > 1). kind 0 SimpleRNN,
 * 1 LSTM, 2 GRU. ntk: time extent of hrp/cs/gs/hh (nt when kept for backward, else 1). */
void S(rk_lanes_fwd)(int nthreads, int kind, int relu, int64_t nc, int64_t ng, int64_t nt,
                     int64_t nl, int64_t nh, int64_t ntk, const R *xp, const R *h0,
                     const R *c0, const R *w, const R *bh, const uint8_t *mask, const R *rm,
                     R *hs, R *hrp, R *cs, R *gs, R *hh, R *last) {
    S(lanes_fwd)(nthreads, kind, relu, nc, ng, nt, nl, nh, ntk, xp, NULL, NULL, h0, c0, w,
                 bh, mask, rm, hs, hrp, cs, gs, hh, last);
}

/* ------------------------------------------------------------------ lanes: backward */
AI void S(simple_back)(const R *restrict gh, const R *restrict hv, const R *restrict m,
                       int relu, R *restrict dz, int64_t nh, int64_t nl) {
    for (int64_t k = 0; k < nh; k++)
        for (int64_t i = 0; i < nl; i++) {
            int64_t j = k * nl + i;
            R h = hv[j];
            R d = gh[j] * (relu ? (h > 0 ? (R)1 : (R)0) : (R)1 - h * h);
            dz[j] = d * m[i];
        }
}

AI void S(lstm_back)(const R *restrict gh, const R *restrict g, const R *restrict cv,
                     const R *restrict cp, const R *restrict m, R *restrict dc, R *restrict dz,
                     int64_t nh, int64_t nl) {
    int64_t n = nh * nl;
    for (int64_t k = 0; k < nh; k++)
        for (int64_t i = 0; i < nl; i++) {
            int64_t j = k * nl + i;
            R gi = g[j], gf = g[n + j], gg = g[2 * n + j], go = g[3 * n + j];
            R tc = RK_TANH(cv[j]);
            R mi = m[i];
            R dct = dc[j] + gh[j] * go * (1 - tc * tc);
            dz[j] = dct * gg * gi * (1 - gi) * mi;
            dz[n + j] = dct * cp[j] * gf * (1 - gf) * mi;
            dz[2 * n + j] = dct * gi * (1 - gg * gg) * mi;
            dz[3 * n + j] = gh[j] * tc * go * (1 - go) * mi;
            dc[j] = mi != 0 ? dct * gf : dc[j];
        }
}

AI void S(gru_back)(const R *restrict gh, const R *restrict g, const R *restrict hhv,
                    const R *restrict hp, const R *restrict m, R *restrict dx, R *restrict dz,
                    int64_t nh, int64_t nl) {
    int64_t n = nh * nl;
    for (int64_t k = 0; k < nh; k++)
        for (int64_t i = 0; i < nl; i++) {
            int64_t j = k * nl + i;
            R gz = g[j], gr = g[n + j], gn = g[2 * n + j];
            R mi = m[i];
            R dn = gh[j] * (1 - gz) * (1 - gn * gn) * mi;
            R d_z = gh[j] * (hp[j] - gn) * gz * (1 - gz) * mi;
            R d_r = dn * hhv[j] * gr * (1 - gr);
            dx[j] = d_z;
            dx[n + j] = d_r;
            dx[2 * n + j] = dn;
            dz[j] = d_z;
            dz[n + j] = d_r;
            dz[2 * n + j] = dn * gr;
        }
}

__attribute__((noinline)) static void S(bwd_chunk)(
    int64_t c, int kind, int relu, int blas, int seq, int64_t ng, int64_t nt, int64_t nl,
    int64_t nh, const R *hs, const R *h0, const R *cs, const R *c0, const R *gs, const R *hh,
    const R *w, const uint8_t *mask, const R *rm, const R *dys, const R *dlast, const R *dhT,
    const R *dcT, R *dxp, R *dhp, R *dh0, R *dc0) {
    int64_t hn = nh * nl, gn = ng * nl;
    R *buf = (R *)calloc((size_t)(8 * hn + 2 * gn + nl), sizeof(R));
    int64_t *tl = (int64_t *)malloc((size_t)nl * sizeof(int64_t));
    if (!buf || !tl) {
        rk_alloc_failed();
        free(buf);
        free(tl);
        return;
    }
    R *dh = buf, *dc = dh + hn, *gh = dc + hn, *acc = gh + hn, *hv = acc + hn, *hp = hv + hn;
    R *r = hp + hn, *dl = r + hn;
    R *dx = dl + hn, *dz = dx + gn, *m = dz + gn;
    const R *g = NULL; /* the step's gates: its block of gs */
    int old = blas ? rk_blas_threads_local(1) : 0;
    for (int64_t i = 0; i < nl; i++) {
        tl[i] = -1;
        for (int64_t t = nt - 1; t >= 0; t--)
            if (mask[(c * nt + t) * nl + i]) {
                tl[i] = t;
                break;
            }
    }
    memcpy(dh, dhT + c * hn, (size_t)hn * sizeof(R));
    if (rm)
        memcpy(r, rm + c * hn, (size_t)hn * sizeof(R));
    else
        for (int64_t j = 0; j < hn; j++) r[j] = 1;
    memcpy(dl, dlast + c * hn, (size_t)hn * sizeof(R));
    if (kind == 1) memcpy(dc, dcT + c * hn, (size_t)hn * sizeof(R));
    for (int64_t t = nt - 1; t >= 0; t--) {
        S(get_mask)(m, mask, c, t, nt, nl);
        if (seq) S(get)(gh, dys, c, t, nh, nt, nl);
        for (int64_t k = 0; k < nh; k++)
            for (int64_t i = 0; i < nl; i++) {
                int64_t j = k * nl + i;
                R v = dh[j] + (seq ? gh[j] * m[i] : (R)0);
                gh[j] = v + (t == tl[i] ? dl[j] : (R)0);
            }
        if (kind == 0) {
            S(get)(hv, hs, c, t, nh, nt, nl);
            S(simple_back)(gh, hv, m, relu, dz, nh, nl);
            S(put)(dxp, c, t, dz, ng, nt, nl);
        } else if (kind == 1) { /* the step's blocks of gs and cs are read in place */
            g = gs + (c * nt + t) * gn;
            const R *cp = t > 0 ? cs + (c * nt + t - 1) * hn : c0 + c * hn;
            S(lstm_back)(gh, g, cs + (c * nt + t) * hn, cp, m, dc, dz, nh, nl);
            S(put)(dxp, c, t, dz, ng, nt, nl);
        } else {
            g = gs + (c * nt + t) * gn;
            if (t > 0)
                S(get)(hp, hs, c, t - 1, nh, nt, nl);
            else
                memcpy(hp, h0 + c * hn, (size_t)hn * sizeof(R));
            S(gru_back)(gh, g, hh + (c * nt + t) * hn, hp, m, dx, dz, nh, nl);
            S(put)(dxp, c, t, dx, ng, nt, nl);
            S(put)(dhp, c, t, dz, ng, nt, nl);
        }
        S(rec_t)(acc, w, dz, ng, nh, nl, blas);
        for (int64_t k = 0; k < nh; k++)
            for (int64_t i = 0; i < nl; i++) {
                int64_t j = k * nl + i;
                R carry = kind == 2 ? gh[j] * g[j] : (R)0;
                R real = acc[j] * r[j] + carry;
                dh[j] = m[i] != 0 ? real : gh[j];
            }
    }
    memcpy(dh0 + c * hn, dh, (size_t)hn * sizeof(R));
    memcpy(dc0 + c * hn, dc, (size_t)hn * sizeof(R));
    if (blas) rk_blas_threads_local(old);
    free(buf);
    free(tl);
}

/* BPTT of rk_lanes_fwd (kept arrays with time extent nt). seq: dys holds the gradient of
 * every output; else only dlast (that of the last real output) is used. */
void S(rk_lanes_bwd)(int nthreads, int kind, int relu, int seq, int64_t nc, int64_t ng,
                     int64_t nt, int64_t nl, int64_t nh, const R *hs, const R *h0, const R *cs,
                     const R *c0, const R *gs, const R *hh, const R *w, const uint8_t *mask,
                     const R *rm, const R *dys, const R *dlast, const R *dhT, const R *dcT,
                     R *dxp, R *dhp, R *dh0, R *dc0) {
    int blas = nh * ng >= RK_GEMM_MIN;
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1)
    for (int64_t c = 0; c < nc; c++)
        S(bwd_chunk)(c, kind, relu, blas, seq, ng, nt, nl, nh, hs, h0, cs, c0, gs, hh, w, mask,
                     rm, dys, dlast, dhT, dcT, dxp, dhp, dh0, dc0);
}

/* ------------------------------------------------------------------ optimizer */
/* Clip (each entry to +-clip_value, then the global norm to clip_norm; <= 0: off) and one
 * Keras RMSprop (a = rho) or Adam (a, b = beta_1, beta_2; step t) update in place. */
/* The update's element loop runs on nthreads OpenMP threads for a tensor of at least
 * RK_OPT_PAR elements (each element is independent: the result does not depend on the
 * count); clipping runs on one. */
#ifndef RK_OPT_PAR
#define RK_OPT_PAR 65536
#endif
void S(rk_optimizer)(int nthreads, int adam, int64_t np, R **params, R **grads, R **s1, R **s2,
                     const int64_t *sizes, double lr, double a, double b, double eps, double t,
                     double clip_value, double clip_norm) {
    if (clip_value > 0) {
        R cv = (R)clip_value;
        for (int64_t j = 0; j < np; j++) {
            R *g = grads[j];
            for (int64_t i = 0; i < sizes[j]; i++) g[i] = g[i] < -cv ? -cv : (g[i] > cv ? cv : g[i]);
        }
    }
    if (clip_norm > 0) {
        double sq = 0;
        for (int64_t j = 0; j < np; j++) {
            R *g = grads[j];
            sq += S(sum_sq)(g, sizes[j]);
        }
        double norm = sqrt(sq);
        if (norm > clip_norm) {
            double scale = clip_norm / (norm + 1e-6);
            for (int64_t j = 0; j < np; j++) {
                R *g = grads[j];
                for (int64_t i = 0; i < sizes[j]; i++) g[i] = (R)(g[i] * scale);
            }
        }
    }
    double alpha = adam ? lr * sqrt(1.0 - pow(b, t)) / (1.0 - pow(a, t)) : lr;
    for (int64_t j = 0; j < np; j++) {
        R *p = params[j], *g = grads[j], *m = s1[j], *v = s2[j];
        int64_t n = sizes[j];
        int par = nthreads > 1 && n >= RK_OPT_PAR;
        (void)par;
        if (adam) {
#pragma omp parallel for num_threads(nthreads) schedule(static) if (par)
            for (int64_t i = 0; i < n; i++) {
                m[i] = (R)(m[i] + (g[i] - m[i]) * (1.0 - a));
                v[i] = (R)(v[i] + ((double)g[i] * g[i] - v[i]) * (1.0 - b));
                p[i] = (R)(p[i] - alpha * m[i] / (sqrt((double)v[i]) + eps));
            }
        } else {
#pragma omp parallel for num_threads(nthreads) schedule(static) if (par)
            for (int64_t i = 0; i < n; i++) {
                m[i] = (R)(a * m[i] + (1.0 - a) * g[i] * g[i]);
                p[i] = (R)(p[i] - lr * g[i] / sqrt(m[i] + eps));
            }
        }
    }
}

/* ------------------------------------------------------------------ classifier (planner) */
/* T = E W_x + b_x (V x G), or W_x + b_x for OneHot (emb == 0). */
static void S(table)(int emb, const R *e, const R *wx, const R *bx, R *table, int64_t ng,
                     int64_t nv, int64_t nd) {
    if (emb) {
        S(rk_gemm)(0, 0, nv, ng, nd, 1, e, nd, wx, ng, 0, table, ng);
        for (int64_t v = 0; v < nv; v++)
            for (int64_t g = 0; g < ng; g++) table[v * ng + g] += bx[g];
    } else {
        for (int64_t v = 0; v < nv; v++)
            for (int64_t g = 0; g < ng; g++) table[v * ng + g] = wx[v * ng + g] + bx[g];
    }
}

/* The chunk's ids and mask in lane order, idl / maskl (C, T, L); padding lanes get id 0. */
__attribute__((noinline)) static void S(lane_ids)(int64_t c, const int64_t *ids, int64_t nb,
                                                  int64_t nt, int mask_zero, int64_t *idl,
                                                  uint8_t *maskl, int64_t nl) {
    for (int64_t t = 0; t < nt; t++)
        for (int64_t i = 0; i < nl; i++) {
            int64_t b = c * nl + i;
            int64_t v = b < nb ? ids[b * nt + t] : 0;
            idl[(c * nt + t) * nl + i] = v;
            maskl[(c * nt + t) * nl + i] = (b >= nb || (mask_zero && v == 0)) ? 0 : 1;
        }
}

/* Gates per block of the table-gradient scatter: a block is one thread's (race-free), and
 * the AVX-512 (AVX2) float build moves 16 (8) lanes x 16 (8) gates at a time. */
#if RK_TR16
#define RK_SB 16
#elif RK_TR8
#define RK_SB 8
#else
#define RK_SB 16
#endif

/* dT[id, g] += dxp[c, g, t, i] over every chunk c, step t and lane i, for the gates
 * g0 .. g0+gn-1 (padding lanes carry a zero gradient; dT (V x G) is zeroed by the caller).
 * The vector builds load gn gate rows of 16 (8) lanes, transpose them in registers (row k
 * then holds lane k's gates) and add each to its id's row of dT, lane after lane, so a
 * repeated id adds twice, in order. */
__attribute__((noinline)) static void S(scatter_block)(int64_t g0, int64_t gn,
                                                       const int64_t *idl, const R *dxp,
                                                       R *dtable, int64_t nc, int64_t ng,
                                                       int64_t nt, int64_t nl) {
    int64_t gs = nt * nl; /* from one gate's row of dxp to the next */
    for (int64_t c = 0; c < nc; c++)
        for (int64_t t = 0; t < nt; t++) {
            const int64_t *id = idl + (c * nt + t) * nl;
            const R *src = dxp + ((c * ng + g0) * nt + t) * nl;
            int64_t i0 = 0;
#if RK_TR16
            __mmask16 mk = (__mmask16)(gn == 16 ? 0xFFFF : (1u << gn) - 1);
            for (; i0 + 16 <= nl; i0 += 16) {
                __m512 r[16];
                for (int j = 0; j < 16; j++)
                    r[j] = j < gn ? _mm512_loadu_ps(src + j * gs + i0) : _mm512_setzero_ps();
                rk_tr16(r);
                for (int k = 0; k < 16; k++) {
                    R *row = dtable + id[i0 + k] * ng + g0;
                    _mm512_mask_storeu_ps(row, mk,
                                          _mm512_add_ps(_mm512_maskz_loadu_ps(mk, row), r[k]));
                }
            }
#elif RK_TR8
            __m256i mk = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)gn),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            for (; i0 + 8 <= nl; i0 += 8) {
                __m256 r[8];
                for (int j = 0; j < 8; j++)
                    r[j] = j < gn ? _mm256_loadu_ps(src + j * gs + i0) : _mm256_setzero_ps();
                rk_tr8(r);
                for (int k = 0; k < 8; k++) {
                    R *row = dtable + id[i0 + k] * ng + g0;
                    _mm256_maskstore_ps(row, mk, _mm256_add_ps(_mm256_maskload_ps(row, mk), r[k]));
                }
            }
#endif
            for (int64_t i = i0; i < nl; i++) {
                R *row = dtable + id[i] * ng + g0;
                for (int64_t j = 0; j < gn; j++) row[j] += src[j * gs + i];
            }
        }
}

/* Dense + loss from logits: out (B,K) probabilities, dz = d mean-loss / d logits; returns the
 * mean loss (binary cross-entropy with Dense(1, sigmoid), else sparse categorical). */
static double S(head)(const R *last, const R *wd, const R *bd, const double *y, int binary,
                      int64_t nb, int64_t nh, int64_t nl, int64_t nk, R *out, double *dz) {
    double total = 0;
    double *z = (double *)malloc((size_t)nk * sizeof(double));
    if (!z) {
        rk_alloc_failed();
        return NAN;
    }
    for (int64_t b = 0; b < nb; b++) {
        int64_t c = b / nl, i = b % nl;
        for (int64_t k = 0; k < nk; k++) {
            double s = bd[k];
            for (int64_t h = 0; h < nh; h++) s += (double)last[(c * nh + h) * nl + i] * wd[h * nk + k];
            z[k] = s;
        }
        if (binary) {
            double zz = z[0], yy = y[b];
            total += (zz > 0 ? zz : 0) - zz * yy + log1p(exp(-fabs(zz)));
            double p = 1.0 / (1.0 + exp(-zz));
            out[b] = (R)p;
            dz[b] = (p - yy) / nb;
        } else {
            double zm = z[0];
            for (int64_t k = 1; k < nk; k++) zm = z[k] > zm ? z[k] : zm;
            double s = 0;
            for (int64_t k = 0; k < nk; k++) s += exp(z[k] - zm);
            int64_t lab = (int64_t)y[b];
            total += log(s) + zm - z[lab];
            for (int64_t k = 0; k < nk; k++) {
                double p = exp(z[k] - zm) / s;
                out[b * nk + k] = (R)p;
                dz[b * nk + k] = (p - (k == lab ? 1.0 : 0.0)) / nb;
            }
        }
    }
    free(z);
    return total / nb;
}

static void S(head_back)(const R *last, const R *wd, const double *dz, int64_t nb, int64_t nc,
                         int64_t nh, int64_t nl, int64_t nk, R *dwd, R *dbd, R *dlast) {
    memset(dwd, 0, (size_t)(nh * nk) * sizeof(R));
    memset(dbd, 0, (size_t)nk * sizeof(R));
    memset(dlast, 0, (size_t)(nc * nh * nl) * sizeof(R));
    for (int64_t b = 0; b < nb; b++) {
        int64_t c = b / nl, i = b % nl;
        for (int64_t k = 0; k < nk; k++) {
            double d = dz[b * nk + k];
            dbd[k] = (R)(dbd[k] + d);
            for (int64_t h = 0; h < nh; h++) {
                int64_t j = (c * nh + h) * nl + i;
                dwd[h * nk + k] = (R)(dwd[h * nk + k] + last[j] * d);
                dlast[j] = (R)(dlast[j] + wd[h * nk + k] * d);
            }
        }
    }
}

/* The arguments of rk_train_span (one struct for both precisions: arrays as void *). */
typedef struct S(rk_train_args) {
    int64_t kind, relu, mask_zero, binary, emb, adam;
    int64_t nb, nt, nc, nl, nh, ng, nk, nv, nd, nthreads;
    const int64_t *ids_all;
    const double *y_all;
    const int64_t *order;
    int64_t nbatch, n_rml;
    const void *rml_all;
    int64_t *ids;
    double *y;
    void *e, *wx, *bx, *wh, *bh, *wd, *bd;
    void *table;
    int64_t *idl;
    uint8_t *maskl;
    void *xp, *hs, *hrp, *cs, *gs, *hh, *last, *h0, *dxp, *dhp, *dh0, *dc0, *dlast, *out;
    double *dz;
    void *dtable, *de, *dwx, *dbx, *dwh, *dbh, *dwd, *dbd;
    int64_t nparams;
    void **params, **grads, **s1, **s2;
    const int64_t *sizes;
    const double *hyper; /* lr, a, b, eps, clip_value, clip_norm */
    int64_t t0;
    double *losses;
    void *outs;
} S(rk_train_args);

/* One training step on the batch in a->ids / a->y; returns its mean loss. */
static double S(train_step)(S(rk_train_args) *a, const R *rml, int64_t t) {
    int64_t nc = a->nc, nl = a->nl, nh = a->nh, ng = a->ng, nt = a->nt, nv = a->nv;
    int kind = (int)a->kind, relu = (int)a->relu;
    int nth = (int)(a->nthreads < nc ? a->nthreads : nc);
    const R *e = a->e, *wx = a->wx, *bx = a->bx, *wh = a->wh, *bh = a->bh, *wd = a->wd,
            *bd = a->bd;
    R *table = a->table, *hs = a->hs, *hrp = a->hrp, *cs = a->cs, *gs = a->gs,
      *hh = a->hh, *last = a->last, *h0 = a->h0, *dxp = a->dxp, *dhp = a->dhp, *dh0 = a->dh0,
      *dc0 = a->dc0, *dlast = a->dlast, *out = a->out, *dtable = a->dtable, *de = a->de,
      *dwx = a->dwx, *dbx = a->dbx, *dwh = a->dwh, *dbh = a->dbh, *dwd = a->dwd, *dbd = a->dbd;
    S(table)((int)a->emb, e, wx, bx, table, ng, nv, a->nd);
#pragma omp parallel for num_threads(nth) schedule(static) if (nth > 1)
    for (int64_t c = 0; c < nc; c++)
        S(lane_ids)(c, a->ids, a->nb, nt, (int)a->mask_zero, a->idl, a->maskl, nl);
    S(lanes_fwd)(nth, kind, relu, nc, ng, nt, nl, nh, nt, NULL, table, a->idl, h0, h0, wh,
                 bh, a->maskl, rml, hs, hrp, cs, gs, hh, last);
    double loss = S(head)(last, wd, bd, a->y, (int)a->binary, a->nb, nh, nl, a->nk, out, a->dz);
    S(head_back)(last, wd, a->dz, a->nb, nc, nh, nl, a->nk, dwd, dbd, dlast);
    S(rk_lanes_bwd)(nth, kind, relu, 0, nc, ng, nt, nl, nh, hs, h0, cs, h0, gs, hh, wh, a->maskl,
                    rml, dlast, dlast, h0, h0, dxp, dhp, dh0, dc0);
    /* dW_h = sum_c hrp_c (H, T L) dhp_c^T; db_h = sum dhp (GRU). Without recurrent dropout
     * hrp_c is h0_c followed by hs_c's first T-1 steps: two products on hs and h0 in place. */
    const R *dh_src = kind == 2 ? dhp : dxp;
    int64_t tl = nt * nl;
    for (int64_t c = 0; c < nc; c++) {
        const R *d = dh_src + c * ng * tl;
        if (rml) {
            S(rk_gemm)(0, 1, nh, ng, tl, 1, hrp + c * nh * tl, tl, d, tl, c > 0 ? 1 : 0, dwh, ng);
        } else {
            S(rk_gemm)(0, 1, nh, ng, nl, 1, h0 + c * nh * nl, nl, d, tl, c > 0 ? 1 : 0, dwh, ng);
            if (nt > 1)
                S(rk_gemm)(0, 1, nh, ng, tl - nl, 1, hs + c * nh * tl, tl, d + nl, tl, 1, dwh, ng);
        }
    }
    for (int64_t g = 0; g < ng; g++) {
        double s = 0;
        if (kind == 2)
            for (int64_t c = 0; c < nc; c++) s += S(sum)(dhp + (c * ng + g) * nt * nl, nt * nl);
        dbh[g] = (R)s;
    }
    memset(dtable, 0, (size_t)(nv * ng) * sizeof(R));
    int64_t nblk = (ng + RK_SB - 1) / RK_SB;
    int nthb = (int)(nth < nblk ? nth : nblk);
#pragma omp parallel for num_threads(nthb) schedule(static) if (nthb > 1)
    for (int64_t k = 0; k < nblk; k++)
        S(scatter_block)(k * RK_SB, ng - k * RK_SB < RK_SB ? ng - k * RK_SB : RK_SB, a->idl,
                         dxp, dtable, nc, ng, nt, nl);
    /* from dT: db_x = sum_v dT, dW_x = E^T dT, dE = dT W_x^T (OneHot: dW_x = dT) */
    S(col_sums)(dtable, nv, ng, dbx);
    if (a->emb) {
        S(rk_gemm)(1, 0, a->nd, ng, nv, 1, e, a->nd, dtable, ng, 0, dwx, ng);
        S(rk_gemm)(0, 1, nv, a->nd, ng, 1, dtable, ng, wx, ng, 0, de, a->nd);
    } else {
        memcpy(dwx, dtable, (size_t)(nv * ng) * sizeof(R));
    }
    const double *hy = a->hyper;
    S(rk_optimizer)(a->nc == 1 ? 1 : (int)a->nthreads, (int)a->adam, a->nparams,
                    (R **)a->params, (R **)a->grads, (R **)a->s1, (R **)a->s2, a->sizes,
                    hy[0], hy[1], hy[2], hy[3], (double)t, hy[4], hy[5]);
    return loss;
}

/* nbatch training steps: batch j holds samples order[j B : (j+1) B] of ids_all / y_all,
 * Adam step t0 + j, recurrent-dropout mask rml_all[j] (rml_all[0] when it holds one; none
 * when n_rml is 0);
 * writes losses[j] and the batch's outputs into outs[j B : (j+1) B]. With one chunk the
 * batch's GEMMs run single-threaded too. */
void S(rk_train_span)(S(rk_train_args) *a) {
    int64_t nb = a->nb, nt = a->nt, nk = a->nk;
    int64_t rml_size = a->nc * a->nh * a->nl;
    int one = a->nc == 1;
    int old = one ? rk_blas_threads_local(1) : 0;
    for (int64_t j = 0; j < a->nbatch; j++) {
        for (int64_t r = 0; r < nb; r++) {
            int64_t s = a->order[j * nb + r];
            memcpy(a->ids + r * nt, a->ids_all + s * nt, (size_t)nt * sizeof(int64_t));
            a->y[r] = a->y_all[s];
        }
        const R *rml = a->n_rml == 0 ? NULL /* no recurrent dropout */
                       : (const R *)a->rml_all + (a->n_rml > 1 ? j * rml_size : 0);
        a->losses[j] = S(train_step)(a, rml, a->t0 + j);
        memcpy((R *)a->outs + j * nb * nk, a->out, (size_t)(nb * nk) * sizeof(R));
    }
    if (one) rk_blas_threads_local(old);
}

__attribute__((noinline)) static void S(infer_chunk)(int64_t c, int kind, int relu,
                                                     int mask_zero, const int64_t *ids,
                                                     int64_t nb, int64_t nt, const R *table,
                                                     const R *wh, const R *bh,
                                                     int64_t ng, int64_t nh, int64_t nl,
                                                     R *hidden, int blas) {
    int64_t hn = nh * nl, gn = ng * nl;
    R *buf = (R *)calloc((size_t)(3 * hn + 2 * gn + nl), sizeof(R));
    int64_t *idv = (int64_t *)malloc((size_t)nl * sizeof(int64_t));
    if (!buf || !idv) {
        rk_alloc_failed();
        free(buf);
        free(idv);
        return;
    }
    R *h = buf, *cc = h + hn, *lst = cc + hn, *x = lst + hn, *pr = x + gn, *m = pr + gn;
    int old = blas ? rk_blas_threads_local(1) : 0;
    for (int64_t t = 0; t < nt; t++) {
        for (int64_t i = 0; i < nl; i++) {
            int64_t b = c * nl + i;
            int64_t v = b < nb ? ids[b * nt + t] : 0;
            idv[i] = v;
            m[i] = (b >= nb || (mask_zero && v == 0)) ? (R)0 : (R)1;
        }
        S(gather_step)(x, table, idv, ng, nl);
        S(step)(kind, x, pr, h, cc, h, wh, bh, m, relu, blas, ng, nh, nl);
        for (int64_t k = 0; k < nh; k++)
            for (int64_t i = 0; i < nl; i++)
                lst[k * nl + i] = m[i] != 0 ? h[k * nl + i] : lst[k * nl + i];
    }
    int64_t n = nb - c * nl < nl ? nb - c * nl : nl;
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < nh; k++) hidden[(c * nl + i) * nh + k] = lst[k * nl + i];
    if (blas) rk_blas_threads_local(old);
    free(buf);
    free(idv);
}

/* The recurrence's last real output hidden[b] (N x H) of every sequence of ids (N x T),
 * forward only: the table T once, then chunks of nl sequences in parallel. */
void S(rk_infer)(int nthreads, int kind, int relu, int mask_zero, int emb, int64_t nb,
                 int64_t nt, const int64_t *ids, const R *e, const R *wx, const R *bx,
                 const R *wh, const R *bh, int64_t ng, int64_t nh, int64_t nv, int64_t nd,
                 int64_t nl, R *table, R *hidden) {
    S(table)(emb, e, wx, bx, table, ng, nv, nd);
    int64_t nc = (nb + nl - 1) / nl;
    int blas = nh * ng >= RK_GEMM_MIN;
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1)
    for (int64_t c = 0; c < nc; c++)
        S(infer_chunk)(c, kind, relu, mask_zero, ids, nb, nt, table, wh, bh, ng, nh, nl,
                       hidden, blas);
}

/* ------------------------------------------------------------------ blas (large layers) */
AI void S(sig_sum)(R *restrict out, const R *restrict a, const R *restrict b, int64_t n) {
    for (int64_t j = 0; j < n; j++) out[j] = RK_SIG(a[j] + b[j]);
}

AI void S(lstm_fwd_row)(const R *restrict p, const R *restrict x, R *restrict c, R *restrict h,
                        R *restrict g, int64_t nh) {
    S(sig_sum)(g, p, x, 2 * nh);
    for (int64_t j = 2 * nh; j < 3 * nh; j++) g[j] = RK_TANH(p[j] + x[j]);
    S(sig_sum)(g + 3 * nh, p + 3 * nh, x + 3 * nh, nh);
    for (int64_t j = 0; j < nh; j++) c[j] = g[nh + j] * c[j] + g[j] * g[2 * nh + j];
    for (int64_t j = 0; j < nh; j++) h[j] = g[3 * nh + j] * RK_TANH(c[j]);
}

AI void S(gru_row)(const R *restrict x, const R *restrict p, const R *restrict bxn,
                   R *restrict h, R *restrict g, R *restrict hh, int64_t nh) {
    S(sig_sum)(g, x, p, 2 * nh);
    for (int64_t j = 0; j < nh; j++) hh[j] = p[2 * nh + j];
    if (bxn)
        for (int64_t j = 0; j < nh; j++)
            g[2 * nh + j] = RK_TANH(x[2 * nh + j] + bxn[j] + g[nh + j] * hh[j]);
    else
        for (int64_t j = 0; j < nh; j++) g[2 * nh + j] = RK_TANH(x[2 * nh + j] + g[nh + j] * hh[j]);
    for (int64_t j = 0; j < nh; j++) h[j] = g[j] * h[j] + (1 - g[j]) * g[2 * nh + j];
}

AI void S(lstm_bwd_row)(const R *restrict gh, const R *restrict g, const R *restrict c,
                        const R *restrict cp, R *restrict dc, R *restrict dz, R *restrict tc,
                        int64_t nh) {
    for (int64_t j = 0; j < nh; j++) tc[j] = RK_TANH(c[j]);
    for (int64_t j = 0; j < nh; j++) {
        R go = g[3 * nh + j];
        dz[3 * nh + j] = gh[j] * tc[j] * go * (1 - go);
        dc[j] += gh[j] * go * (1 - tc[j] * tc[j]);
    }
    for (int64_t j = 0; j < nh; j++) {
        R gi = g[j], gf = g[nh + j], gg = g[2 * nh + j];
        dz[j] = dc[j] * gg * gi * (1 - gi);
        dz[nh + j] = dc[j] * cp[j] * gf * (1 - gf);
        dz[2 * nh + j] = dc[j] * gi * (1 - gg * gg);
        dc[j] *= gf;
    }
}

AI void S(gru_row_bwd)(const R *restrict gh, const R *restrict g, const R *restrict hh,
                       const R *restrict hp, R *restrict dz, R *restrict dxn, R *restrict dh,
                       int64_t nh) {
    for (int64_t j = 0; j < nh; j++) {
        R n = g[2 * nh + j];
        dxn[j] = gh[j] * (1 - g[j]) * (1 - n * n);
    }
    for (int64_t j = 0; j < nh; j++) {
        R z = g[j], r = g[nh + j];
        dz[j] = gh[j] * (hp[j] - g[2 * nh + j]) * z * (1 - z);
        dz[nh + j] = dxn[j] * hh[j] * r * (1 - r);
        dz[2 * nh + j] = dxn[j] * r;
    }
    for (int64_t j = 0; j < nh; j++) dh[j] = gh[j] * g[j];
}

/* The projection of sequence-step bt (= b T + t): row bt of xp, or row ids[bt] of the table
 * xp when an Embedding is folded; rows xs apart. */
AI const R *S(xp_row)(const R *xp, const int64_t *ids, int64_t bt, int64_t xs) {
    return xp + (ids ? ids[bt] : bt) * xs;
}

/* rows ahead whose projection (and output) the gate math prefetches */
#ifndef RK_PF_ROWS
#define RK_PF_ROWS 2
#endif
__attribute__((noinline)) static void S(blas_fwd_row)(
    int64_t b, int64_t t, int64_t tg, int kind, int relu, int use_rm, int seq, int keep,
    int rev, int64_t nb, int64_t nt, int64_t nh, int64_t ng, int64_t xs, int64_t ys,
    const R *xp, const int64_t *ids, R *h, R *c, const R *bh, const R *bxn,
    const uint8_t *mask, const R *rm, R *hr, R *p, R *hs, R *cs, R *gates, R *hhs, R *y,
    R *last) {
    int64_t tx = rev ? nt - 1 - t : t; /* the time index read and written at step t */
    int real = mask[b * nt + tx] != 0;
    R *hb = h + b * nh;
    if (b + RK_PF_ROWS < nb) { /* a later row's projection (a table row: a cache miss) */
        int64_t bn = b + RK_PF_ROWS;
        const char *xn = (const char *)S(xp_row)(xp, ids, bn * nt + tx, xs);
        for (int64_t o = 0; o < ng * (int64_t)sizeof(R); o += 64) __builtin_prefetch(xn + o, 0, 3);
        if (seq) {
            const char *yn = (const char *)(y + (bn * nt + tx) * ys);
            for (int64_t o = 0; o < nh * (int64_t)sizeof(R); o += 64) __builtin_prefetch(yn + o, 1, 3);
        }
    }
    if (real) {
        R *pb = p + b * ng;
        const R *xb = S(xp_row)(xp, ids, b * nt + tx, xs);
        if (bh)
            for (int64_t j = 0; j < ng; j++) pb[j] += bh[j];
        if (kind == 2) {
            S(gru_row)(xb, pb, bxn, hb, gates + (tg * nb + b) * ng, hhs + (tg * nb + b) * nh, nh);
        } else if (kind == 1) {
            S(lstm_fwd_row)(pb, xb, c + b * nh, hb, gates + (tg * nb + b) * ng, nh);
        } else {
            for (int64_t j = 0; j < nh; j++) {
                R z = pb[j] + xb[j];
                hb[j] = relu ? (z > 0 ? z : (R)0) : RK_TANH(z);
            }
        }
        for (int64_t k = 0; k < nh; k++) hr[b * nh + k] = use_rm ? hb[k] * rm[b * nh + k] : hb[k];
        if (!seq) memcpy(last + b * ys, hb, (size_t)nh * sizeof(R));
    }
    if (keep) {
        memcpy(hs + ((t + 1) * nb + b) * nh, hb, (size_t)nh * sizeof(R));
        if (kind == 1) memcpy(cs + ((t + 1) * nb + b) * nh, c + b * nh, (size_t)nh * sizeof(R));
    }
    if (seq) {
        R *yb = y + (b * nt + tx) * ys;
        for (int64_t k = 0; k < nh; k++) yb[k] = real ? hb[k] : (R)0;
    }
}

/* Forward of the blas backend: one GEMM per step over the batch, gate math parallel over
 * the batch. h (and LSTM c) hold the initial state on entry and the final one on exit.
 * Projected inputs: row (b, t) of xp (B,T, row stride xs >= G) when ids is NULL, else row
 * ids[b, t] of the table xp (V, row stride xs) (an Embedding folded into the input
 * projection, read where it lies). bh (G, or NULL) is added to each step's recurrent
 * product, bxn (H, GRU only, or NULL) to the candidate's input part: biases the projection
 * left out. Outputs y (B,T) / last (B) have row stride ys >= H (one direction's half of a
 * bidirectional layer's output). rev: step t reads and writes time index T-1-t (go_backwards
 * without flipping the inputs, the mask or the outputs); inference only (keep = 0): the
 * backward pass reads the kept states in time order. */
void S(rk_blas_fwd)(int nthreads, int kind, int relu, int use_rm, int seq, int keep, int rev,
                    int64_t nb, int64_t nt, int64_t nh, int64_t ng, int64_t xs, int64_t ys,
                    const R *xp, const int64_t *ids, R *h, R *c, const R *w, const R *bh,
                    const R *bxn, const uint8_t *mask, const R *rm, R *hs, R *cs, R *gates,
                    R *hhs, R *y, R *last) {
    R *hr = (R *)rk_alloc64((size_t)(nb * nh) * sizeof(R), 0);
    R *p = (R *)rk_alloc64((size_t)(nb * ng) * sizeof(R), 0);
    if (!hr || !p) {
        rk_alloc_failed();
        free(hr);
        free(p);
        return;
    }
    /* one thread for the gate math (small batches): the step GEMMs on one BLAS thread too */
    int old = nthreads == 1 ? rk_blas_threads_local(1) : 0;
    for (int64_t j = 0; j < nb * nh; j++) hr[j] = use_rm ? h[j] * rm[j] : h[j];
    if (keep) {
        memcpy(hs, h, (size_t)(nb * nh) * sizeof(R));
        if (kind == 1) memcpy(cs, c, (size_t)(nb * nh) * sizeof(R));
    }
    for (int64_t t = 0; t < nt; t++) {
        int64_t tg = keep ? t : 0;
        S(rk_gemm)(0, 0, nb, ng, nh, 1, hr, nh, w, ng, 0, p, ng);
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1)
        for (int64_t b = 0; b < nb; b++)
            S(blas_fwd_row)(b, t, tg, kind, relu, use_rm, seq, keep, rev, nb, nt, nh, ng, xs, ys,
                            xp, ids, h, c, bh, bxn, mask, rm, hr, p, hs, cs, gates, hhs, y, last);
    }
    if (nthreads == 1) rk_blas_threads_local(old);
    free(hr);
    free(p);
}

AI void S(take_q)(R *restrict dh, const R *restrict q, const R *restrict rm, int use_rm,
                  int add, int64_t nh) {
    for (int64_t k = 0; k < nh; k++) {
        R v = use_rm ? q[k] * rm[k] : q[k];
        dh[k] = add ? dh[k] + v : v;
    }
}

__attribute__((noinline)) static void S(blas_bwd_row)(
    int64_t b, int64_t t, int kind, int relu, int use_rm, int seq, int64_t nb, int64_t nt,
    int64_t nh, int64_t ng, const R *hs, const R *cs, const R *gates, const R *hhs,
    const uint8_t *mask, const R *rm, const R *dy, const R *dlast, R *dh, R *dc, R *dxp,
    R *dhn, R *dz, R *gh, R *q, R *tc, const int64_t *tl) {
    int gru = kind == 2;
    if (t < nt - 1 && mask[b * nt + t + 1]) S(take_q)(dh + b * nh, q + b * nh, rm + b * nh, use_rm, gru, nh);
    R *dxb = dxp + (b * nt + t) * ng;
    if (!mask[b * nt + t]) {
        memset(dxb, 0, (size_t)ng * sizeof(R));
        if (gru) {
            memset(dz + b * ng, 0, (size_t)ng * sizeof(R));
            memset(dhn + (b * nt + t) * nh, 0, (size_t)nh * sizeof(R));
        }
        return;
    }
    R *ghb = gh + b * nh;
    for (int64_t k = 0; k < nh; k++) ghb[k] = dh[b * nh + k];
    if (seq)
        for (int64_t k = 0; k < nh; k++) ghb[k] += dy[(b * nt + t) * nh + k];
    if (t == tl[b])
        for (int64_t k = 0; k < nh; k++) ghb[k] += dlast[b * nh + k];
    if (kind == 0) {
        const R *hv = hs + ((t + 1) * nb + b) * nh;
        for (int64_t j = 0; j < nh; j++)
            dxb[j] = ghb[j] * (relu ? (hv[j] > 0 ? (R)1 : (R)0) : (R)1 - hv[j] * hv[j]);
    } else if (kind == 1) {
        S(lstm_bwd_row)(ghb, gates + (t * nb + b) * ng, cs + ((t + 1) * nb + b) * nh,
                        cs + (t * nb + b) * nh, dc + b * nh, dxb, tc + b * nh, nh);
    } else {
        R *dzb = dz + b * ng;
        S(gru_row_bwd)(ghb, gates + (t * nb + b) * ng, hhs + (t * nb + b) * nh,
                       hs + (t * nb + b) * nh, dzb, dxb + 2 * nh, dh + b * nh, nh);
        memcpy(dxb, dzb, (size_t)(2 * nh) * sizeof(R));
        memcpy(dhn + (b * nt + t) * nh, dzb + 2 * nh, (size_t)nh * sizeof(R));
    }
}

/* BPTT of rk_blas_fwd. dh / dc hold the gradients of the final state on entry and of the
 * initial state on exit. Writes dxp (B,T,G) and, for GRU, dhn (B,T,H) = dn_pre * r. */
void S(rk_blas_bwd)(int nthreads, int kind, int relu, int use_rm, int seq, int64_t nb,
                    int64_t nt, int64_t nh, int64_t ng, const R *hs, const R *cs,
                    const R *gates, const R *hhs, const R *w, const uint8_t *mask, const R *rm,
                    const R *dy, const R *dlast, R *dh, R *dc, R *dxp, R *dhn) {
    int gru = kind == 2;
    R *dz = (R *)rk_alloc64((size_t)(gru ? nb * ng : 1) * sizeof(R), 1);
    R *gh = (R *)rk_alloc64((size_t)(nb * nh) * sizeof(R), 0);
    R *q = (R *)rk_alloc64((size_t)(nb * nh) * sizeof(R), 1);
    R *tc = (R *)rk_alloc64((size_t)(nb * nh) * sizeof(R), 0);
    int64_t *tl = (int64_t *)malloc((size_t)nb * sizeof(int64_t));
    int old = nthreads == 1 ? rk_blas_threads_local(1) : 0;
    if (!dz || !gh || !q || !tc || !tl) {
        rk_alloc_failed();
        goto done;
    }
    for (int64_t b = 0; b < nb; b++) {
        tl[b] = -1;
        for (int64_t t = nt - 1; t >= 0; t--)
            if (mask[b * nt + t]) {
                tl[b] = t;
                break;
            }
    }
    for (int64_t t = nt - 1; t >= 0; t--) {
#pragma omp parallel for num_threads(nthreads) schedule(static) if (nthreads > 1)
        for (int64_t b = 0; b < nb; b++)
            S(blas_bwd_row)(b, t, kind, relu, use_rm, seq, nb, nt, nh, ng, hs, cs, gates, hhs,
                            mask, rm, dy, dlast, dh, dc, dxp, dhn, dz, gh, q, tc, tl);
        if (gru)
            S(rk_gemm)(0, 1, nb, nh, ng, 1, dz, ng, w, ng, 0, q, nh);
        else
            S(rk_gemm)(0, 1, nb, nh, ng, 1, dxp + t * ng, nt * ng, w, ng, 0, q, nh);
    }
    for (int64_t b = 0; b < nb; b++)
        if (mask[b * nt]) S(take_q)(dh + b * nh, q + b * nh, rm + b * nh, use_rm, gru, nh);
done:
    if (nthreads == 1) rk_blas_threads_local(old);
    free(dz);
    free(gh);
    free(q);
    free(tc);
    free(tl);
}

#undef AI
#undef RK_SB
#undef RK_TANH
#undef RK_SIG
