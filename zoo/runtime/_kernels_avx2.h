/* AVX2 + FMA bodies (8 fp32 lanes) for CPUs without AVX-512, e.g. AMD Zen 2/3 and Intel client cores.
 *
 * Included by _kernels.c after the scalar helpers (exp_neg, gelu1) and the GELU/ACCUMULATE flags. Every body here
 * handles whole groups of 8 tokens (or columns); the dispatcher in _kernels.c hands the remainder to the portable
 * body, so no masked stores (slow on AMD) are needed. The arithmetic follows the AVX-512 bodies lane for lane,
 * except that 1 / (1 + z/2) in GELU is an exact division (no rcp14 on AVX2).
 */
#if ZOO_X86

#define AVX2 __attribute__((target("avx2,fma")))
#define PREFETCH_AHEAD 8

/* exp(x) for x <= ~0: exp_neg's range reduction and polynomial, 2^k built in the exponent field */
AVX2 static inline __m256 exp_neg8(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(1.428606765330187e-06f), r);
    __m256 p = _mm256_set1_ps(EXP_POLY[0]);
    for (int i = 1; i < 7; i++) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_POLY[i]));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

AVX2 static inline __m256 gelu8(__m256 v) {
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    const __m256 x = _mm256_mul_ps(v, _mm256_set1_ps(0.70710678118654752f));
    const __m256 z = _mm256_andnot_ps(sign, x);
    const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(z, _mm256_set1_ps(0.5f), one));
    __m256 p = _mm256_set1_ps(ERF_POLY[0]);
    for (int i = 1; i < 10; i++) p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(ERF_POLY[i]));
    p = _mm256_fnmadd_ps(z, z, p);
    const __m256 y = _mm256_fnmadd_ps(t, exp_neg8(p), one);
    const __m256 erf = _mm256_or_ps(y, _mm256_and_ps(x, sign));
    return _mm256_mul_ps(_mm256_mul_ps(v, _mm256_set1_ps(0.5f)), _mm256_add_ps(one, erf));
}

AVX2 static inline __m256 act8(__m256 v, int act) { return (act & GELU) ? gelu8(v) : v; }

/* One fp32 row over T tokens (T a multiple of 8) for both CSR (nw = 1 weight per column index) and block-4 CSR
 * (nw = 4 weights on features c..c+3); inlined per nw. 64-token steps keep 8 accumulators in flight, 8-token steps
 * two chains (even/odd index). */
AVX2 static inline __attribute__((always_inline)) void f32_row_avx2(const int nw, const float *vals, const int32_t *cols, int64_t a,
                                                                     int64_t b, const float *X, int64_t ldx, int64_t T, float *y,
                                                                     float bias, int act) {
    const int acc = act & ACCUMULATE;
    const __m256 vb = _mm256_set1_ps(bias);
    int64_t t0 = 0;
    for (; t0 + 64 <= T; t0 += 64) {
        __m256 c[8];
        for (int i = 0; i < 8; i++) c[i] = acc ? _mm256_loadu_ps(y + t0 + 8 * i) : vb;
        for (int64_t k = a; k < b; k++) {
            const float *x = X + (int64_t)cols[k] * ldx + t0;
            if (k + PREFETCH_AHEAD < b) {  /* random rows of X: start fetching a later non-zero's 256 bytes now */
                const char *next = (const char *)(X + (int64_t)cols[k + PREFETCH_AHEAD] * ldx + t0);
                for (int j = 0; j < nw; j++)
                    for (int l = 0; l < 256; l += 64) _mm_prefetch(next + j * ldx * 4 + l, _MM_HINT_T0);
            }
            for (int j = 0; j < nw; j++) {
                const __m256 w = _mm256_broadcast_ss(vals + nw * k + j);
#pragma GCC unroll 8
                for (int i = 0; i < 8; i++) c[i] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + j * ldx + 8 * i), c[i]);
            }
        }
        for (int i = 0; i < 8; i++) _mm256_storeu_ps(y + t0 + 8 * i, act8(c[i], act));
    }
#define STEP(c, k) for (int j = 0; j < nw; j++) \
        c = _mm256_fmadd_ps(_mm256_broadcast_ss(vals + nw * (k) + j), _mm256_loadu_ps(X + ((int64_t)cols[k] + j) * ldx + t0), c)
    for (; t0 < T; t0 += 8) {
        __m256 c0 = acc ? _mm256_loadu_ps(y + t0) : vb, c1 = _mm256_setzero_ps();
        int64_t k = a;
        for (; k + 1 < b; k += 2) { STEP(c0, k); STEP(c1, k + 1); }
        if (k < b) STEP(c0, k);
        _mm256_storeu_ps(y + t0, act8(_mm256_add_ps(c0, c1), act));
    }
#undef STEP
}

AVX2 static void csr_f32_row_avx2(const float *vals, const int32_t *cols, int64_t a, int64_t b, const float *X, int64_t ldx,
                                  int64_t T, float *y, float bias, int act) {
    f32_row_avx2(1, vals, cols, a, b, X, ldx, T, y, bias, act);
}

AVX2 static void b4_f32_row_avx2(const float *vals, const int32_t *cols, int64_t a, int64_t b, const float *X, int64_t ldx,
                                 int64_t T, float *y, float bias, int act) {
    f32_row_avx2(4, vals, cols, a, b, X, ldx, T, y, bias, act);
}

/* One row group (RG rows, see py_spmm_rg) over one packed 16-token tile Xt [in][16] that sits in L1/L2, in two
 * passes of RG/2 rows: each step loads one column index and one weight per row and feeds two token vectors, so every
 * weight broadcast serves 16 tokens and 8 accumulators stay in flight. Rows are stored through `y[i]` (NULL for
 * padding rows); `n` valid tokens (a partial tile loads and stores through a buffer). */
AVX2 static inline __attribute__((always_inline)) void rg_f32_group_avx2(const int nw, const float *vals, const int32_t *cols,
                                                                          int64_t a, int64_t b, const float *Xt, float *const *y,
                                                                          const float *bias, int64_t n, int act) {
    for (int h = 0; h < RG; h += RG / 2) {
        __m256 c[RG / 2][2];
#pragma GCC unroll 4
        for (int i = 0; i < RG / 2; i++) {
            float *yi = y[h + i];
            if (!yi) c[i][0] = c[i][1] = _mm256_setzero_ps();
            else if (!(act & ACCUMULATE)) c[i][0] = c[i][1] = _mm256_broadcast_ss(bias + h + i);
            else if (n == 16) { c[i][0] = _mm256_loadu_ps(yi); c[i][1] = _mm256_loadu_ps(yi + 8); }
            else { float tmp[16] = {0}; memcpy(tmp, yi, (size_t)n * sizeof(float)); c[i][0] = _mm256_loadu_ps(tmp); c[i][1] = _mm256_loadu_ps(tmp + 8); }
        }
        for (int64_t e = a; e < b; e++) {
            const int32_t *ce = cols + e * RG + h;
            const float *ve = vals + (e * RG + h) * nw;
#pragma GCC unroll 4
            for (int i = 0; i < RG / 2; i++)
                for (int j = 0; j < nw; j++) {
                    const __m256 w = _mm256_broadcast_ss(ve + i * nw + j);
                    const float *x = Xt + ((int64_t)ce[i] + j) * 16;
                    c[i][0] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x), c[i][0]);
                    c[i][1] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + 8), c[i][1]);
                }
        }
#pragma GCC unroll 4
        for (int i = 0; i < RG / 2; i++) {
            float *yi = y[h + i];
            if (!yi) continue;
            const __m256 v0 = act8(c[i][0], act), v1 = act8(c[i][1], act);
            if (n == 16) { _mm256_storeu_ps(yi, v0); _mm256_storeu_ps(yi + 8, v1); }
            else { float tmp[16]; _mm256_storeu_ps(tmp, v0); _mm256_storeu_ps(tmp + 8, v1); memcpy(yi, tmp, (size_t)n * sizeof(float)); }
        }
    }
}

AVX2 static void rg_csr_group_avx2(const float *vals, const int32_t *cols, int64_t a, int64_t b, const float *Xt, float *const *y,
                                   const float *bias, int64_t n, int act) {
    rg_f32_group_avx2(1, vals, cols, a, b, Xt, y, bias, n, act);
}

AVX2 static void rg_b4_group_avx2(const float *vals, const int32_t *cols, int64_t a, int64_t b, const float *Xt, float *const *y,
                                  const float *bias, int64_t n, int act) {
    rg_f32_group_avx2(4, vals, cols, a, b, Xt, y, bias, n, act);
}

/* Y[r][0:N] = sum_k A(r, k) B[k][0:N] for N a multiple of 8: 6 rows x 16 columns per step (12 accumulators, 2 loads
 * and 6 broadcasts feed 12 FMAs), a last 8 columns 6 rows x 8; every element is one FMA chain over k from zero, so
 * its value does not depend on which step computed it. Rows past R repeat the last row and are not stored. */
AVX2 static void gemm_rows_avx2(const float *A, int64_t ars, int64_t aks, const float *B, int64_t ldb, float *Y, int64_t ldy,
                                int64_t R, int64_t Kd, int64_t N) {
    for (int64_t n0 = 0; n0 < N; n0 += 16) {
        const int two = N - n0 >= 16;
        for (int64_t r0 = 0; r0 < R; r0 += 6) {
            const float *a[6];
            for (int i = 0; i < 6; i++) a[i] = A + (r0 + i < R ? r0 + i : R - 1) * ars;
            __m256 c[6][2];
            for (int i = 0; i < 6; i++) c[i][0] = c[i][1] = _mm256_setzero_ps();
            if (two)
                for (int64_t k = 0; k < Kd; k++) {
                    const float *bk = B + k * ldb + n0;
                    const __m256 b0 = _mm256_loadu_ps(bk), b1 = _mm256_loadu_ps(bk + 8);
#pragma GCC unroll 6
                    for (int i = 0; i < 6; i++) {
                        const __m256 w = _mm256_broadcast_ss(a[i] + k * aks);
                        c[i][0] = _mm256_fmadd_ps(w, b0, c[i][0]);
                        c[i][1] = _mm256_fmadd_ps(w, b1, c[i][1]);
                    }
                }
            else
                for (int64_t k = 0; k < Kd; k++) {
                    const __m256 b0 = _mm256_loadu_ps(B + k * ldb + n0);
#pragma GCC unroll 6
                    for (int i = 0; i < 6; i++) c[i][0] = _mm256_fmadd_ps(_mm256_broadcast_ss(a[i] + k * aks), b0, c[i][0]);
                }
            for (int i = 0; i < 6 && r0 + i < R; i++) {
                _mm256_storeu_ps(Y + (r0 + i) * ldy + n0, c[i][0]);
                if (two) _mm256_storeu_ps(Y + (r0 + i) * ldy + n0 + 8, c[i][1]);
            }
        }
    }
}

/* softmax down the columns of P [R][N] after P = P * scale + mask[r], N a multiple of 8 */
AVX2 static void softmax_cols_avx2(float *P, int64_t ldp, int64_t R, int64_t N, const float *mask, float scale) {
    const __m256 vs = _mm256_set1_ps(scale);
    for (int64_t n0 = 0; n0 < N; n0 += 8) {
        __m256 mx = _mm256_set1_ps(-3.0e38f), sum = _mm256_setzero_ps();
        for (int64_t r = 0; r < R; r++) {
            float *p = P + r * ldp + n0;
            const __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(p), vs, _mm256_broadcast_ss(mask + r));
            _mm256_storeu_ps(p, v);
            mx = _mm256_max_ps(mx, v);
        }
        for (int64_t r = 0; r < R; r++) {
            float *p = P + r * ldp + n0;
            const __m256 e = exp_neg8(_mm256_sub_ps(_mm256_loadu_ps(p), mx));
            _mm256_storeu_ps(p, e);
            sum = _mm256_add_ps(sum, e);
        }
        const __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), sum);
        for (int64_t r = 0; r < R; r++) {
            float *p = P + r * ldp + n0;
            _mm256_storeu_ps(p, _mm256_mul_ps(_mm256_loadu_ps(p), inv));
        }
    }
}

AVX2 static void gelu_span_avx2(float *x, int64_t n) {
    for (int64_t i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, gelu8(_mm256_loadu_ps(x + i)));
}

AVX2 static inline __m256i quant8(__m256 x, __m256 s, __m256 zp) {
    __m256 q = _mm256_add_ps(_mm256_round_ps(_mm256_div_ps(x, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), zp);
    q = _mm256_min_ps(_mm256_max_ps(q, _mm256_setzero_ps()), _mm256_set1_ps(255.0f));
    return _mm256_cvttps_epi32(q);
}

/* tokens [0, T & ~7) of feature group g: 8 tokens of 4 features -> 8 little-endian int32 words, one byte per feature */
AVX2 static void quant_group_avx2(const float *X, uint8_t *out, int64_t g, int64_t T, float s, float zp) {
    const __m256 vs = _mm256_set1_ps(s), vz = _mm256_set1_ps(zp);
    const float *x = X + 4 * g * T;
    for (int64_t t = 0; t + 8 <= T; t += 8) {
        __m256i w = quant8(_mm256_loadu_ps(x + t), vs, vz);
        w = _mm256_or_si256(w, _mm256_slli_epi32(quant8(_mm256_loadu_ps(x + T + t), vs, vz), 8));
        w = _mm256_or_si256(w, _mm256_slli_epi32(quant8(_mm256_loadu_ps(x + 2 * T + t), vs, vz), 16));
        w = _mm256_or_si256(w, _mm256_slli_epi32(quant8(_mm256_loadu_ps(x + 3 * T + t), vs, vz), 24));
        _mm256_storeu_si256((__m256i *)(out + (g * T + t) * 4), w);
    }
}

/* residual add + LayerNorm of tokens t..t+7 over the feature axis (see layernorm_generic) */
AVX2 static void layernorm_avx2(const float *X, const float *R, float *O, const float *g, const float *b, float eps,
                                int64_t F, int64_t T, int64_t t) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    for (int64_t f = 0; f < F; f++) {
        __m256 v = _mm256_loadu_ps(X + f * T + t);
        if (R) v = _mm256_add_ps(v, _mm256_loadu_ps(R + f * T + t));
        _mm256_storeu_ps(O + f * T + t, v);
        if (f & 1) s1 = _mm256_add_ps(s1, v); else s0 = _mm256_add_ps(s0, v);
    }
    const __m256 mean = _mm256_div_ps(_mm256_add_ps(s0, s1), _mm256_set1_ps((float)F));
    __m256 v0 = _mm256_setzero_ps(), v1 = v0;
    for (int64_t f = 0; f < F; f++) {
        const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(O + f * T + t), mean);
        if (f & 1) v1 = _mm256_fmadd_ps(d, d, v1); else v0 = _mm256_fmadd_ps(d, d, v0);
    }
    const __m256 var = _mm256_div_ps(_mm256_add_ps(v0, v1), _mm256_set1_ps((float)F));
    const __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_sqrt_ps(_mm256_add_ps(var, _mm256_set1_ps(eps))));
    for (int64_t f = 0; f < F; f++) {
        const __m256 d = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(O + f * T + t), mean), inv);
        _mm256_storeu_ps(O + f * T + t, _mm256_fmadd_ps(d, _mm256_broadcast_ss(g + f), _mm256_broadcast_ss(b + f)));
    }
}

/* int8 block-4 row (T a multiple of 8), X8 uint8 [in/4][ldx][4] as for VNNI. No vpmaddubsw: its int16 pair sums
 * saturate (255 * 127 * 2 > 32767). Activations are zero-extended to int16 and vpmaddwd sums (feature 0, 1) and
 * (feature 2, 3) of each token exactly in int32; one hadd per output vector finishes each token's four products. */
AVX2 static inline __m256i i8_weight16(int32_t w) { return _mm256_broadcastq_epi64(_mm_cvtepi8_epi16(_mm_cvtsi32_si128(w))); }

/* pair sums of tokens 0-3 (lo) and 4-7 (hi) -> 8 int32 token sums in order */
AVX2 static inline __m256i i8_tokens(__m256i lo, __m256i hi) {
    return _mm256_permute4x64_epi64(_mm256_hadd_epi32(lo, hi), 0xD8);
}

#define I8_MADD(x, w) _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(x))), w)
AVX2 static void b4_i8_row_avx2(const int32_t *wpk, const int32_t *groups, int64_t a, int64_t b, const uint8_t *X8, int64_t ldx,
                                int64_t T, float *y, float scale, float offset, int act) {
    const __m256 vs = _mm256_set1_ps(scale), vo = _mm256_set1_ps(offset);
    int64_t t0 = 0;
    for (; t0 + 32 <= T; t0 += 32) {
        __m256i c[8];
        for (int i = 0; i < 8; i++) c[i] = _mm256_setzero_si256();
        for (int64_t k = a; k < b; k++) {
            const __m256i w = i8_weight16(wpk[k]);
            const uint8_t *x = X8 + ((int64_t)groups[k] * ldx + t0) * 4;
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) c[i] = _mm256_add_epi32(c[i], I8_MADD(x + 16 * i, w));
        }
        for (int i = 0; i < 4; i++)
            _mm256_storeu_ps(y + t0 + 8 * i, act8(_mm256_fmadd_ps(_mm256_cvtepi32_ps(i8_tokens(c[2 * i], c[2 * i + 1])), vs, vo), act));
    }
    for (; t0 < T; t0 += 8) {
        __m256i lo = _mm256_setzero_si256(), hi = lo;
        for (int64_t k = a; k < b; k++) {
            const __m256i w = i8_weight16(wpk[k]);
            const uint8_t *x = X8 + ((int64_t)groups[k] * ldx + t0) * 4;
            lo = _mm256_add_epi32(lo, I8_MADD(x, w));
            hi = _mm256_add_epi32(hi, I8_MADD(x + 16, w));
        }
        _mm256_storeu_ps(y + t0, act8(_mm256_fmadd_ps(_mm256_cvtepi32_ps(i8_tokens(lo, hi)), vs, vo), act));
    }
}
#undef I8_MADD

#undef PREFETCH_AHEAD
#undef AVX2
#endif
