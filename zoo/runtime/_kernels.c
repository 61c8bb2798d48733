/* Sparse encoder kernels for obert-zoo.
 *
 * Activations are laid out features x tokens (row-major [features][T]) so that every non-zero weight
 * drives contiguous vector work over tokens. Three Linear kernels:
 *   csr_f32      : Y[out][T] = W_csr X + b, fp32, unstructured or block-4 weights (CSR).
 *   b4_f32       : same with block-4 CSR (one column index per 4 weights).
 *   b4_int8      : int8 block-4 weights x uint8 activations in VNNI layout [in/4][T][4] -> int32 -> fp32
 *                  (VNNI, or AVX2 by zero-extension to int16 and vpmaddwd).
 * plus the elementwise pieces that would otherwise dominate (GELU, softmax, quantize+interleave).
 * Each hot kernel has an AVX-512 (VNNI for int8) body, an AVX2+FMA body (_kernels_avx2.h) and a portable C body,
 * selected at run time in that order (ZOO_NO_AVX512 / ZOO_NO_AVX2 switch a family off).
 * Threads: OpenMP over output rows, dynamic chunks (rows have unequal non-zero counts).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define ZOO_X86 1
#else
#define ZOO_X86 0
#endif

#define TILE 128  /* tokens per register tile: 8 zmm of fp32 / int32 */
#define RG 8      /* rows per row group in the row-group packings (8 accumulators in flight) */
#define RG_TT 16  /* widest packed token tile of the row-group kernels (AVX-512: 16, AVX2 and portable: 8) */
#define RG_BLOCK 8  /* row groups per OpenMP work item: their weights stay in L2 while the token tiles pass */

static int has_avx512 = 0, has_avx2 = 0, has_vnni = 0, jit_off = 0;

/* Linear epilogue/prologue flags: GELU on the way out; ACCUMULATE adds into Y instead of starting from the bias
 * (CSR only: a Linear split by input-feature chunks runs one product per chunk) */
enum { GELU = 1, ACCUMULATE = 2 };

/* ------------------------------------------------------------------ elementwise */
/* exp for x <= 0 (range-reduced, degree-6 polynomial, ~1e-7 relative) written so compilers vectorize it */
static inline float exp_neg(float x) {
    x = x < -87.0f ? -87.0f : x;
    const float k = nearbyintf(x * 1.44269504088896341f);
    const float r = x - k * 0.693145751953125f - k * 1.428606765330187e-06f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f; p = p * r + 1.0f / 24.0f; p = p * r + 1.0f / 6.0f; p = p * r + 0.5f; p = p * r + 1.0f; p = p * r + 1.0f;
    union { int32_t i; float f; } u;
    u.i = ((int32_t)k + 127) << 23;
    return p * u.f;
}

/* erf by Abramowitz & Stegun 7.1.26 refined (|error| < 1.2e-7), same formula as the numpy reference */
static inline float erf_approx(float x) {
    const float z = fabsf(x);
    const float t = 1.0f / (1.0f + 0.5f * z);
    const float poly = -z * z - 1.26551223f + t * (1.00002368f + t * (0.37409196f + t * (0.09678418f + t * (-0.18628806f + t * (
        0.27886807f + t * (-1.13520398f + t * (1.48851587f + t * (-0.82215223f + t * 0.17087277f))))))));
    const float y = 1.0f - t * exp_neg(poly);
    return x < 0 ? -y : y;
}

static inline float gelu1(float v) { return 0.5f * v * (1.0f + erf_approx(v * 0.70710678118654752f)); }

/* the polynomials of exp_neg and erf_approx, highest degree first, for the vector bodies */
static const float EXP_POLY[7] = {1.0f / 720.0f, 1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f, 0.5f, 1.0f, 1.0f};
static const float ERF_POLY[10] = {0.17087277f, -0.82215223f, 1.48851587f, -1.13520398f, 0.27886807f,
                                   -0.18628806f, 0.09678418f, 0.37409196f, 1.00002368f, -1.26551223f};

#if ZOO_X86
static inline __mmask16 tail_mask(int64_t remaining) {
    return remaining >= 16 ? (__mmask16)0xFFFF : remaining <= 0 ? (__mmask16)0 : (__mmask16)((1u << remaining) - 1u);
}

/* uint8 quantization of 16 lanes as int32: clamp(round_half_even(x / s) + zp, 0, 255) */
__attribute__((target("avx512f")))
static inline __m512i quant16(__m512 x, __m512 s, __m512 zp) {
    __m512 q = _mm512_add_ps(_mm512_roundscale_ps(_mm512_div_ps(x, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), zp);
    q = _mm512_min_ps(_mm512_max_ps(q, _mm512_setzero_ps()), _mm512_set1_ps(255.0f));
    return _mm512_cvttps_epi32(q);
}

/* 4 rows (row stride ld) x 16 lanes quantized, row k in byte k of each 32-bit lane: the VNNI operand order */
__attribute__((target("avx512f")))
static inline __m512i quant4x16(const float *x, int64_t ld, __mmask16 m, __m512 s, __m512 zp) {
    __m512i w = quant16(_mm512_maskz_loadu_ps(m, x), s, zp);
    for (int k = 1; k < 4; k++) w = _mm512_or_si512(w, _mm512_slli_epi32(quant16(_mm512_maskz_loadu_ps(m, x + k * ld), s, zp), 8 * k));
    return w;
}

/* 4 rows x 64 columns of Y per step: 16 accumulators, 4 broadcasts and 4 loads feed 16 FMAs */
__attribute__((target("avx512f")))
static void gemm_rows_avx512(const float *A, int64_t ars, int64_t aks, const float *B, int64_t ldb, float *Y, int64_t ldy,
                             int64_t R, int64_t Kd, int64_t N) {
    for (int64_t n0 = 0; n0 < N; n0 += 64) {
        const __mmask16 m0 = tail_mask(N - n0), m1 = tail_mask(N - n0 - 16), m2 = tail_mask(N - n0 - 32), m3 = tail_mask(N - n0 - 48);
        for (int64_t r0 = 0; r0 < R; r0 += 4) {
            const float *a0 = A + r0 * ars;  /* rows past R repeat the last row and are not stored */
            const float *a1 = A + (r0 + 1 < R ? r0 + 1 : R - 1) * ars, *a2 = A + (r0 + 2 < R ? r0 + 2 : R - 1) * ars;
            const float *a3 = A + (r0 + 3 < R ? r0 + 3 : R - 1) * ars;
            __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
            __m512 c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
            for (int64_t k = 0; k < Kd; k++) {
                const float *b = B + k * ldb + n0;
                const __m512 b0 = _mm512_maskz_loadu_ps(m0, b), b1 = _mm512_maskz_loadu_ps(m1, b + 16);
                const __m512 b2 = _mm512_maskz_loadu_ps(m2, b + 32), b3 = _mm512_maskz_loadu_ps(m3, b + 48);
                __m512 w = _mm512_set1_ps(a0[k * aks]);
                c00 = _mm512_fmadd_ps(w, b0, c00); c01 = _mm512_fmadd_ps(w, b1, c01); c02 = _mm512_fmadd_ps(w, b2, c02); c03 = _mm512_fmadd_ps(w, b3, c03);
                w = _mm512_set1_ps(a1[k * aks]);
                c10 = _mm512_fmadd_ps(w, b0, c10); c11 = _mm512_fmadd_ps(w, b1, c11); c12 = _mm512_fmadd_ps(w, b2, c12); c13 = _mm512_fmadd_ps(w, b3, c13);
                w = _mm512_set1_ps(a2[k * aks]);
                c20 = _mm512_fmadd_ps(w, b0, c20); c21 = _mm512_fmadd_ps(w, b1, c21); c22 = _mm512_fmadd_ps(w, b2, c22); c23 = _mm512_fmadd_ps(w, b3, c23);
                w = _mm512_set1_ps(a3[k * aks]);
                c30 = _mm512_fmadd_ps(w, b0, c30); c31 = _mm512_fmadd_ps(w, b1, c31); c32 = _mm512_fmadd_ps(w, b2, c32); c33 = _mm512_fmadd_ps(w, b3, c33);
            }
            float *y = Y + r0 * ldy + n0;
            _mm512_mask_storeu_ps(y, m0, c00); _mm512_mask_storeu_ps(y + 16, m1, c01); _mm512_mask_storeu_ps(y + 32, m2, c02); _mm512_mask_storeu_ps(y + 48, m3, c03);
            if (r0 + 1 >= R) continue;
            y += ldy;
            _mm512_mask_storeu_ps(y, m0, c10); _mm512_mask_storeu_ps(y + 16, m1, c11); _mm512_mask_storeu_ps(y + 32, m2, c12); _mm512_mask_storeu_ps(y + 48, m3, c13);
            if (r0 + 2 >= R) continue;
            y += ldy;
            _mm512_mask_storeu_ps(y, m0, c20); _mm512_mask_storeu_ps(y + 16, m1, c21); _mm512_mask_storeu_ps(y + 32, m2, c22); _mm512_mask_storeu_ps(y + 48, m3, c23);
            if (r0 + 3 >= R) continue;
            y += ldy;
            _mm512_mask_storeu_ps(y, m0, c30); _mm512_mask_storeu_ps(y + 16, m1, c31); _mm512_mask_storeu_ps(y + 32, m2, c32); _mm512_mask_storeu_ps(y + 48, m3, c33);
        }
    }
}

/* exp(x) for x <= ~0: the scalar exp_neg's range reduction and polynomial, 16 lanes, 2^k applied by scalef */
__attribute__((target("avx512f")))
static inline __m512 exp_neg16(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.428606765330187e-06f), r);
    __m512 p = _mm512_set1_ps(EXP_POLY[0]);
    for (int i = 1; i < 7; i++) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_POLY[i]));
    return _mm512_scalef_ps(p, k);
}

/* GELU on 16 lanes: erf_approx with 1 / (1 + z/2) from rcp14 plus one Newton step (relative error ~1e-8) */
__attribute__((target("avx512f")))
static inline __m512 gelu16(__m512 v) {
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 x = _mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f));
    const __m512 z = _mm512_abs_ps(x);
    const __m512 den = _mm512_fmadd_ps(z, _mm512_set1_ps(0.5f), one);
    __m512 t = _mm512_rcp14_ps(den);
    t = _mm512_mul_ps(t, _mm512_fnmadd_ps(den, t, _mm512_set1_ps(2.0f)));
    __m512 p = _mm512_set1_ps(ERF_POLY[0]);
    for (int i = 1; i < 10; i++) p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(ERF_POLY[i]));
    p = _mm512_fnmadd_ps(z, z, p);
    const __m512 y = _mm512_fnmadd_ps(t, exp_neg16(p), one);
    const __m512 erf = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(y),
        _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u))));
    return _mm512_mul_ps(_mm512_mul_ps(v, _mm512_set1_ps(0.5f)), _mm512_add_ps(one, erf));
}

/* the epilogue of every Linear kernel: optional GELU */
__attribute__((target("avx512f")))
static inline __m512 act16(__m512 v, int act) { return (act & GELU) ? gelu16(v) : v; }
#endif

/* The row-group packings (kinds "csr-rg8" and "block4-rg8"): output rows sorted by non-zero count and taken RG at a
 * time; entry e of a group holds one column index (nw = 1) or one block of 4 (nw = 4) per row, interleaved
 * cols[e * RG + i], vals[(e * RG + i) * nw + j], rows shorter than the group's longest padded with zero weights.
 * The activations are first copied into token tiles Xp [tile][in][tt] so that one tile (in x tt floats) stays in L1
 * while a group's rows stream their weights past it: each loaded activation vector costs one index and one weight
 * instead of a 256-byte row streamed from L2. Both vector bodies use 16-token tiles and the same packing and summation
 * order per row: AVX-512 keeps the 8 rows in 8 zmm accumulators, AVX2 (rg_f32_group_avx2) runs two passes of 4 rows x
 * 2 ymm (16 registers would not leave one for the weight). Keep the two mechanically parallel; the AVX-512 one is
 * compiled everywhere but was only run on CPUs that have it (tests/runtime/test_kernels.py). */
#if ZOO_X86
__attribute__((target("avx512f")))
static inline __attribute__((always_inline)) void rg_f32_group_avx512(const int nw, const float *vals, const int32_t *cols,
                                                                      int64_t a, int64_t b, const float *Xt, float *const *y,
                                                                      const float *bias, int64_t n, int act) {
    const __mmask16 m = tail_mask(n);
    __m512 c[RG];
#pragma GCC unroll 8
    for (int i = 0; i < RG; i++)
        c[i] = !y[i] ? _mm512_setzero_ps() : (act & ACCUMULATE) ? _mm512_maskz_loadu_ps(m, y[i]) : _mm512_set1_ps(bias[i]);
    for (int64_t e = a; e < b; e++) {
        const int32_t *ce = cols + e * RG;
        const float *ve = vals + e * RG * nw;
#pragma GCC unroll 8
        for (int i = 0; i < RG; i++)
            for (int j = 0; j < nw; j++)
                c[i] = _mm512_fmadd_ps(_mm512_set1_ps(ve[i * nw + j]), _mm512_loadu_ps(Xt + ((int64_t)ce[i] + j) * 16), c[i]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < RG; i++)
        if (y[i]) _mm512_mask_storeu_ps(y[i], m, act16(c[i], act));
}

__attribute__((target("avx512f")))
static void rg_csr_group_avx512(const float *vals, const int32_t *cols, int64_t a, int64_t b, const float *Xt, float *const *y,
                                const float *bias, int64_t n, int act) {
    rg_f32_group_avx512(1, vals, cols, a, b, Xt, y, bias, n, act);
}

__attribute__((target("avx512f")))
static void rg_b4_group_avx512(const float *vals, const int32_t *cols, int64_t a, int64_t b, const float *Xt, float *const *y,
                               const float *bias, int64_t n, int act) {
    rg_f32_group_avx512(4, vals, cols, a, b, Xt, y, bias, n, act);
}
#endif

#include "_kernels_avx2.h"

/* AVX2 bodies take whole groups of 8 tokens/columns; the portable body finishes the rest */
#define AVX2_PART(n) ((n) & ~(int64_t)7)

/* ------------------------------------------------------------------ fp32 CSR (portable) */
static void csr_f32_row_generic(const float *vals, const int32_t *cols, int64_t a, int64_t b, const float *X, int64_t ldx,
                                int64_t T, float *y, float bias, int act) {
    if (!(act & ACCUMULATE)) for (int64_t t = 0; t < T; t++) y[t] = bias;
    for (int64_t k = a; k < b; k++) {
        const float w = vals[k];
        const float *x = X + (int64_t)cols[k] * ldx;
        for (int64_t t = 0; t < T; t++) y[t] += w * x[t];
    }
    if (act & GELU) for (int64_t t = 0; t < T; t++) y[t] = gelu1(y[t]);
}

#if ZOO_X86
__attribute__((target("avx512f")))
static void csr_f32_row_avx512(const float *vals, const int32_t *cols, int64_t a, int64_t b, const float *X, int64_t ldx,
                               int64_t T, float *y, float bias, int act) {
    int64_t t0 = 0;
    const int acc = act & ACCUMULATE;
    const __m512 vb = _mm512_set1_ps(bias);
#define INIT(i) (acc ? _mm512_loadu_ps(y + t0 + 16 * (i)) : vb)
    for (; t0 + TILE <= T; t0 += TILE) {
        __m512 c0 = INIT(0), c1 = INIT(1), c2 = INIT(2), c3 = INIT(3), c4 = INIT(4), c5 = INIT(5), c6 = INIT(6), c7 = INIT(7);
        for (int64_t k = a; k < b; k++) {
            const __m512 w = _mm512_set1_ps(vals[k]);
            const float *x = X + (int64_t)cols[k] * ldx + t0;
            c0 = _mm512_fmadd_ps(w, _mm512_loadu_ps(x), c0);
            c1 = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + 16), c1);
            c2 = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + 32), c2);
            c3 = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + 48), c3);
            c4 = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + 64), c4);
            c5 = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + 80), c5);
            c6 = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + 96), c6);
            c7 = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + 112), c7);
        }
        float *o = y + t0;
        _mm512_storeu_ps(o, act16(c0, act)); _mm512_storeu_ps(o + 16, act16(c1, act)); _mm512_storeu_ps(o + 32, act16(c2, act));
        _mm512_storeu_ps(o + 48, act16(c3, act)); _mm512_storeu_ps(o + 64, act16(c4, act)); _mm512_storeu_ps(o + 80, act16(c5, act));
        _mm512_storeu_ps(o + 96, act16(c6, act)); _mm512_storeu_ps(o + 112, act16(c7, act));
    }
    for (; t0 + 64 <= T; t0 += 64) {
        __m512 c0 = INIT(0), c1 = INIT(1), c2 = INIT(2), c3 = INIT(3);
        for (int64_t k = a; k < b; k++) {
            const __m512 w = _mm512_set1_ps(vals[k]);
            const float *x = X + (int64_t)cols[k] * ldx + t0;
            c0 = _mm512_fmadd_ps(w, _mm512_loadu_ps(x), c0);
            c1 = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + 16), c1);
            c2 = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + 32), c2);
            c3 = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + 48), c3);
        }
        _mm512_storeu_ps(y + t0, act16(c0, act)); _mm512_storeu_ps(y + t0 + 16, act16(c1, act));
        _mm512_storeu_ps(y + t0 + 32, act16(c2, act)); _mm512_storeu_ps(y + t0 + 48, act16(c3, act));
    }
    for (; t0 < T; t0 += 16) {  /* tail: one (masked) vector at a time */
        const int64_t n = T - t0 < 16 ? T - t0 : 16;
        const __mmask16 m = (__mmask16)((1u << n) - 1u);
        __m512 c = acc ? _mm512_maskz_loadu_ps(m, y + t0) : vb;
        for (int64_t k = a; k < b; k++)
            c = _mm512_fmadd_ps(_mm512_set1_ps(vals[k]), _mm512_maskz_loadu_ps(m, X + (int64_t)cols[k] * ldx + t0), c);
        _mm512_mask_storeu_ps(y + t0, m, act16(c, act));
    }
}
#undef INIT

/* block-4 CSR: each block = 4 weights on input features c..c+3 */
__attribute__((target("avx512f")))
static void b4_f32_row_avx512(const float *vals, const int32_t *cols, int64_t a, int64_t b, const float *X, int64_t ldx,
                              int64_t T, float *y, float bias, int act) {
    int64_t t0 = 0;
    for (; t0 + TILE <= T; t0 += TILE) {
        __m512 c[8];
        for (int i = 0; i < 8; i++) c[i] = (act & ACCUMULATE) ? _mm512_loadu_ps(y + t0 + 16 * i) : _mm512_set1_ps(bias);
        for (int64_t k = a; k < b; k++) {
            const float *x = X + (int64_t)cols[k] * ldx + t0;
            const float *w4 = vals + 4 * k;
            const __m512 w0 = _mm512_set1_ps(w4[0]), w1 = _mm512_set1_ps(w4[1]), w2 = _mm512_set1_ps(w4[2]), w3 = _mm512_set1_ps(w4[3]);
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                __m512 s = _mm512_mul_ps(w0, _mm512_loadu_ps(x + 16 * i));
                s = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + ldx + 16 * i), s);
                s = _mm512_fmadd_ps(w2, _mm512_loadu_ps(x + 2 * ldx + 16 * i), s);
                s = _mm512_fmadd_ps(w3, _mm512_loadu_ps(x + 3 * ldx + 16 * i), s);
                c[i] = _mm512_add_ps(c[i], s);
            }
        }
        for (int i = 0; i < 8; i++) _mm512_storeu_ps(y + t0 + 16 * i, act16(c[i], act));
    }
    for (; t0 < T; t0 += 16) {
        const int64_t n = T - t0 < 16 ? T - t0 : 16;
        const __mmask16 m = (__mmask16)((1u << n) - 1u);
        __m512 c = (act & ACCUMULATE) ? _mm512_maskz_loadu_ps(m, y + t0) : _mm512_set1_ps(bias);
        for (int64_t k = a; k < b; k++) {
            const float *x = X + (int64_t)cols[k] * ldx + t0;
            for (int j = 0; j < 4; j++)
                c = _mm512_fmadd_ps(_mm512_set1_ps(vals[4 * k + j]), _mm512_maskz_loadu_ps(m, x + j * ldx), c);
        }
        _mm512_mask_storeu_ps(y + t0, m, act16(c, act));
    }
}

/* int8 block-4: X8 is uint8 [in/4][ldx][4] (offset to the first token); each block weight is 4 int8 packed in an
 * int32. A 64-token step keeps two accumulator sets (even/odd blocks) and a 32-token step four, so that several
 * independent vpdpbusd chains are always in flight. */
#define I8_STORE(i, acc) _mm512_storeu_ps(y + t0 + 16 * (i), act16(_mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), vs, vo), act))
#define I8_X(k) (X8 + ((int64_t)groups[k] * ldx + t0) * 4)
#define DP(acc, k, i) acc = _mm512_dpbusd_epi32(acc, _mm512_loadu_si512((const void *)(I8_X(k) + 64 * (i))), _mm512_set1_epi32(wpk[k]))
__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void b4_i8_row_vnni(const int32_t *wpk, const int32_t *groups, int64_t a, int64_t b, const uint8_t *X8, int64_t ldx,
                           int64_t T, float *y, float scale, float offset, int act) {
    int64_t t0 = 0;
    const __m512 vs = _mm512_set1_ps(scale), vo = _mm512_set1_ps(offset);
    for (; t0 + TILE <= T; t0 += TILE) {
        __m512i c[8];
        for (int i = 0; i < 8; i++) c[i] = _mm512_setzero_si512();
        for (int64_t k = a; k < b; k++) {
            const __m512i w = _mm512_set1_epi32(wpk[k]);
            const uint8_t *x = I8_X(k);
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) c[i] = _mm512_dpbusd_epi32(c[i], _mm512_loadu_si512((const void *)(x + 64 * i)), w);
        }
        for (int i = 0; i < 8; i++) I8_STORE(i, c[i]);
    }
    for (; t0 + 64 <= T; t0 += 64) {
        __m512i p0 = _mm512_setzero_si512(), p1 = p0, p2 = p0, p3 = p0, q0 = p0, q1 = p0, q2 = p0, q3 = p0;
        int64_t k = a;
        for (; k + 1 < b; k += 2) {
            DP(p0, k, 0); DP(p1, k, 1); DP(p2, k, 2); DP(p3, k, 3);
            DP(q0, k + 1, 0); DP(q1, k + 1, 1); DP(q2, k + 1, 2); DP(q3, k + 1, 3);
        }
        if (k < b) { DP(p0, k, 0); DP(p1, k, 1); DP(p2, k, 2); DP(p3, k, 3); }
        I8_STORE(0, _mm512_add_epi32(p0, q0)); I8_STORE(1, _mm512_add_epi32(p1, q1));
        I8_STORE(2, _mm512_add_epi32(p2, q2)); I8_STORE(3, _mm512_add_epi32(p3, q3));
    }
    for (; t0 + 32 <= T; t0 += 32) {
        __m512i p0 = _mm512_setzero_si512(), p1 = p0, q0 = p0, q1 = p0, r0 = p0, r1 = p0, s0 = p0, s1 = p0;
        int64_t k = a;
        for (; k + 3 < b; k += 4) {
            DP(p0, k, 0); DP(p1, k, 1); DP(q0, k + 1, 0); DP(q1, k + 1, 1);
            DP(r0, k + 2, 0); DP(r1, k + 2, 1); DP(s0, k + 3, 0); DP(s1, k + 3, 1);
        }
        for (; k < b; k++) { DP(p0, k, 0); DP(p1, k, 1); }
        I8_STORE(0, _mm512_add_epi32(_mm512_add_epi32(p0, q0), _mm512_add_epi32(r0, s0)));
        I8_STORE(1, _mm512_add_epi32(_mm512_add_epi32(p1, q1), _mm512_add_epi32(r1, s1)));
    }
    for (; t0 < T; t0 += 16) {
        const int64_t n = T - t0 < 16 ? T - t0 : 16;
        const __mmask16 m = (__mmask16)((1u << n) - 1u);
        __m512i c = _mm512_setzero_si512();
        for (int64_t k = a; k < b; k++)
            c = _mm512_dpbusd_epi32(c, _mm512_maskz_loadu_epi32(m, (const void *)I8_X(k)), _mm512_set1_epi32(wpk[k]));
        _mm512_mask_storeu_ps(y + t0, m, act16(_mm512_fmadd_ps(_mm512_cvtepi32_ps(c), vs, vo), act));
    }
}
#undef DP
#undef I8_X
#undef I8_STORE
#endif

static void b4_f32_row_generic(const float *vals, const int32_t *cols, int64_t a, int64_t b, const float *X, int64_t ldx,
                               int64_t T, float *y, float bias, int act) {
    if (!(act & ACCUMULATE)) for (int64_t t = 0; t < T; t++) y[t] = bias;
    for (int64_t k = a; k < b; k++)
        for (int j = 0; j < 4; j++) {
            const float w = vals[4 * k + j];
            const float *x = X + ((int64_t)cols[k] + j) * ldx;
            for (int64_t t = 0; t < T; t++) y[t] += w * x[t];
        }
    if (act & GELU) for (int64_t t = 0; t < T; t++) y[t] = gelu1(y[t]);
}

/* one row group over one packed tile of `tt` tokens (portable; same packing and order as the vector bodies) */
static void rg_f32_group_generic(int nw, const float *vals, const int32_t *cols, int64_t a, int64_t b, const float *Xt, int64_t tt,
                                 float *const *y, const float *bias, int64_t n, int act) {
    for (int i = 0; i < RG; i++) {
        if (!y[i]) continue;
        float acc[RG_TT];
        for (int64_t t = 0; t < n; t++) acc[t] = (act & ACCUMULATE) ? y[i][t] : bias[i];
        for (int64_t e = a; e < b; e++)
            for (int j = 0; j < nw; j++) {
                const float w = vals[(e * RG + i) * nw + j];
                const float *x = Xt + ((int64_t)cols[e * RG + i] + j) * tt;
                for (int64_t t = 0; t < n; t++) acc[t] += w * x[t];
            }
        for (int64_t t = 0; t < n; t++) y[i][t] = (act & GELU) ? gelu1(acc[t]) : acc[t];
    }
}

static void b4_i8_row_generic(const int32_t *wpk, const int32_t *groups, int64_t a, int64_t b, const uint8_t *X8, int64_t ldx,
                              int64_t T, float *y, float scale, float offset, int act) {
    for (int64_t t = 0; t < T; t++) {
        int32_t acc = 0;
        for (int64_t k = a; k < b; k++) {
            const int8_t *w = (const int8_t *)&wpk[k];
            const uint8_t *x = X8 + ((int64_t)groups[k] * ldx + t) * 4;
            acc += (int32_t)x[0] * w[0] + (int32_t)x[1] * w[1] + (int32_t)x[2] * w[2] + (int32_t)x[3] * w[3];
        }
        y[t] = (act & GELU) ? gelu1((float)acc * scale + offset) : (float)acc * scale + offset;
    }
}

/* ------------------------------------------------------------------ Python glue: raw pointers from numpy */
#define PTR(T, v) ((T)(uintptr_t)(v))

static void set_threads(int threads) {
#ifdef _OPENMP
    if (threads > 0) omp_set_num_threads(threads);
#else
    (void)threads;
#endif
}

/* ------------------------------------------------------------------ attention */
/* Y[r][0:n] = sum_k A(r, k) B[k][0:n] with A(r, k) = A[r * ars + k * aks]: the two attention products, written so
 * one kernel serves both (scores^T = K^T Q and context = V P^T with P stored transposed). */
static void gemm_rows_generic(const float *A, int64_t ars, int64_t aks, const float *B, int64_t ldb, float *Y, int64_t ldy,
                              int64_t R, int64_t Kd, int64_t N) {
    for (int64_t r = 0; r < R; r++) {
        float *y = Y + r * ldy;
        for (int64_t n = 0; n < N; n++) y[n] = 0.0f;
        for (int64_t k = 0; k < Kd; k++) {
            const float a = A[r * ars + k * aks];
            const float *b = B + k * ldb;
            for (int64_t n = 0; n < N; n++) y[n] += a * b[n];
        }
    }
}

/* softmax down the columns of P [R][N] (over r for every n), after P = P * scale + mask[r] */
static void softmax_cols_generic(float *P, int64_t ldp, int64_t R, int64_t N, const float *mask, float scale) {
    for (int64_t n = 0; n < N; n++) {
        float mx = -3.0e38f, sum = 0.0f;
        for (int64_t r = 0; r < R; r++) {
            float *p = P + r * ldp + n;
            *p = *p * scale + mask[r];
            mx = *p > mx ? *p : mx;
        }
        for (int64_t r = 0; r < R; r++) { float *p = P + r * ldp + n; *p = exp_neg(*p - mx); sum += *p; }
        const float inv = 1.0f / sum;
        for (int64_t r = 0; r < R; r++) P[r * ldp + n] *= inv;
    }
}

#if ZOO_X86
__attribute__((target("avx512f")))
static void softmax_cols_avx512(float *P, int64_t ldp, int64_t R, int64_t N, const float *mask, float scale) {
    const __m512 vs = _mm512_set1_ps(scale);
    for (int64_t n0 = 0; n0 < N; n0 += 16) {
        const __mmask16 m = tail_mask(N - n0);
        __m512 mx = _mm512_set1_ps(-3.0e38f), sum = _mm512_setzero_ps();
        for (int64_t r = 0; r < R; r++) {
            float *p = P + r * ldp + n0;
            const __m512 v = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, p), vs, _mm512_set1_ps(mask[r]));
            _mm512_mask_storeu_ps(p, m, v);
            mx = _mm512_max_ps(mx, v);
        }
        for (int64_t r = 0; r < R; r++) {
            float *p = P + r * ldp + n0;
            const __m512 e = exp_neg16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, p), mx));
            _mm512_mask_storeu_ps(p, m, e);
            sum = _mm512_add_ps(sum, e);
        }
        const __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_mask_blend_ps(m, _mm512_set1_ps(1.0f), sum));
        for (int64_t r = 0; r < R; r++) {
            float *p = P + r * ldp + n0;
            _mm512_mask_storeu_ps(p, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, p), inv));
        }
    }
}
#endif

static void gemm_rows(const float *A, int64_t ars, int64_t aks, const float *B, int64_t ldb, float *Y, int64_t ldy,
                      int64_t R, int64_t Kd, int64_t N) {
#if ZOO_X86
    if (has_avx512) { gemm_rows_avx512(A, ars, aks, B, ldb, Y, ldy, R, Kd, N); return; }
    if (has_avx2) {
        const int64_t n = AVX2_PART(N);
        gemm_rows_avx2(A, ars, aks, B, ldb, Y, ldy, R, Kd, n);
        if (n < N) gemm_rows_generic(A, ars, aks, B + n, ldb, Y + n, ldy, R, Kd, N - n);
        return;
    }
#endif
    gemm_rows_generic(A, ars, aks, B, ldb, Y, ldy, R, Kd, N);
}

static void softmax_cols(float *P, int64_t ldp, int64_t R, int64_t N, const float *mask, float scale) {
#if ZOO_X86
    if (has_avx512) { softmax_cols_avx512(P, ldp, R, N, mask, scale); return; }
    if (has_avx2) {
        const int64_t n = AVX2_PART(N);
        softmax_cols_avx2(P, ldp, R, n, mask, scale);
        if (n < N) softmax_cols_generic(P + n, ldp, R, N - n, mask, scale);
        return;
    }
#endif
    softmax_cols_generic(P, ldp, R, N, mask, scale);
}

/* fake quantization (uint8 attention points); scale <= 0 means "not quantized" */
__attribute__((target_clones("avx512f", "avx2", "default")))
static void fake_quant(float *x, int64_t n, float scale, float zp) {
    if (scale <= 0.0f) return;
    for (int64_t i = 0; i < n; i++) {
        float q = nearbyintf(x[i] / scale) + zp;
        q = q < 0.0f ? 0.0f : (q > 255.0f ? 255.0f : q);
        x[i] = (q - zp) * scale;
    }
}

/* a [d][S] block with row stride T: used in place when not quantized, else copied into dst and fake-quantized */
static const float *head_block(const float *src, int64_t T, int64_t d, int64_t S, float *dst, float scale, float zp, int64_t *ld) {
    if (scale <= 0.0f) { *ld = T; return src; }
    for (int64_t c = 0; c < d; c++) memcpy(dst + c * S, src + c * T, (size_t)S * sizeof(float));
    fake_quant(dst, d * S, scale, zp);
    *ld = S;
    return dst;
}

/* Queries per attention block: the scores of one block against every key (keys x block floats: 24 KB at 384 keys
 * with AVX2) stay in L1/L2 through scores, softmax and context, where a whole S x S matrix (590 KB at 384) went
 * through L3 five times (AVX2, 1 thread, 384 tokens: 9.2 -> 7.5 ms per 12-head layer; blocks of 32-64 gain less).
 * A multiple of the products' column step (8 AVX2, 64 AVX-512, whose 4 x 64 step would compute a narrower block as
 * masked zeros) so block edges never move a column between vector and portable bodies: every score and context value
 * is summed exactly as over the whole matrix. */
static int64_t query_block(void) {
#if ZOO_X86
    if (has_avx512) return 64;
#endif
    return 16;
}

#include "_attention_i8.h"

/* Scratch floats one attention task needs: Q, K, V copies and one query block of scores (fp32), or the uint8/int8
 * operands of the integer path */
static int64_t attention_scratch(int64_t S, int64_t d) {
    const int64_t f32 = 3 * d * S + S * query_block(), i8 = attention_i8_scratch(S, d) / 4 + 16;
    return f32 > i8 ? f32 : i8;
}

/* One (sequence, head) of attention: task = b * heads + h */
static void attention_task(const float *qkv, float *out, const float *mask, const int64_t *keys, int64_t S, int64_t heads, int64_t d,
                           int64_t T, float scale, const float *qp, float *buf, int64_t task) {
    const int64_t H = heads * d, NB = query_block();
    const int64_t b = task / heads, h = task % heads;
    const int64_t Sk = keys && keys[b] > 0 && keys[b] < S ? keys[b] : S;
#if ZOO_X86
    if (attention_i8_applies(qp, d)) {
        attention_i8(qkv + b * S + h * d * T, qkv + b * S + (H + h * d) * T, qkv + b * S + (2 * H + h * d) * T, out + (h * d) * T + b * S,
                     mask + b * S, S, Sk, d, T, scale, qp, (uint8_t *)(void *)buf);
        return;
    }
#endif
    float *PT = buf + 3 * d * S;
    const float *base = qkv + b * S;
    const float *mb = mask + b * S;
    int64_t ldq, ldk, ldv;
    const float *Q = head_block(base + (h * d) * T, T, d, S, buf, qp[0], qp[1], &ldq);
    const float *Kh = head_block(base + (H + h * d) * T, T, d, Sk, buf + d * S, qp[2], qp[3], &ldk);
    const float *V = head_block(base + (2 * H + h * d) * T, T, d, Sk, buf + 2 * d * S, qp[8], qp[9], &ldv);
    float *o = out + (h * d) * T + b * S;
    for (int64_t n0 = 0; n0 < S; n0 += NB) {
        const int64_t nb = S - n0 < NB ? S - n0 : NB;
        gemm_rows(Kh, 1, ldk, Q + n0, ldq, PT, nb, Sk, d, nb);
        fake_quant(PT, Sk * nb, qp[4], qp[5]);
        softmax_cols(PT, nb, Sk, nb, mb, scale);
        fake_quant(PT, Sk * nb, qp[6], qp[7]);
        gemm_rows(V, ldv, 1, PT, nb, o + n0, T, d, Sk, nb);
    }
    if (qp[10] > 0.0f)
        for (int64_t c = 0; c < d; c++) fake_quant(o + c * T, S, qp[10], qp[11]);
}

/* attention(qkv [3H][T], out [H][T], mask_add [B][S], B, S, heads, d, scale, qp (12 floats: scale/zp of q, k, scores,
 * probs, v, context; scale 0 = none), threads[, keys]). T = B * S; one task per (sequence, head). keys: int64 [B], how
 * many leading keys of each sequence to visit (past them the mask is all padding, whose softmax weights are 0 in the
 * reference and ~1e-38 here: skipping them changed no output bit in the tests); 0 (the default) means all S.
 * Scores are computed transposed, PT[j][i] = sum_c K[c][j] Q[c][i], so the softmax over keys runs down columns with
 * queries in vector lanes and the context ctx[c][i] = sum_j V[c][j] PT[j][i] needs no transpose; both run one
 * query block at a time (query_block). */
static PyObject *py_attention(PyObject *self, PyObject *args) {
    Py_ssize_t qkv, out, mask, B, S, heads, d, qp_ptr, keys_ptr = 0; float scale; int threads;
    if (!PyArg_ParseTuple(args, "nnnnnnnfni|n", &qkv, &out, &mask, &B, &S, &heads, &d, &scale, &qp_ptr, &threads, &keys_ptr))
        return NULL;
    const float *qp = PTR(const float *, qp_ptr);
    const int64_t *keys = PTR(const int64_t *, keys_ptr);
    const int64_t T = B * S;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    set_threads(threads);
#pragma omp parallel
    {
        float *buf = (float *)malloc((size_t)attention_scratch(S, d) * sizeof(float));
        if (!buf) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (Py_ssize_t task = 0; task < B * heads; task++)
            if (buf) attention_task(PTR(const float *, qkv), PTR(float *, out), PTR(const float *, mask), keys, S, heads, d, T, scale, qp, buf, task);
        free(buf);
    }
    Py_END_ALLOW_THREADS
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* Row r of an fp32 CSR (kind 0) or block-4 CSR (kind 1) product over tokens [t0, t0 + tw) of X [in][T], by the body
 * this CPU runs (AVX-512; AVX2 for whole groups of 8 tokens and the portable body for the rest) */
static void f32_row(int kind, const int64_t *ip, const int32_t *cp, const float *vp, const float *bias, const float *X, float *Y,
                    int64_t T, int64_t t0, int64_t tw, int64_t r, int act) {
    const float bv = bias[r];
    const float *Xt = X + t0;
    float *yr = Y + r * T + t0;
#if ZOO_X86
    if (has_avx512) {
        if (kind == 0) csr_f32_row_avx512(vp, cp, ip[r], ip[r + 1], Xt, T, tw, yr, bv, act);
        else b4_f32_row_avx512(vp, cp, ip[r], ip[r + 1], Xt, T, tw, yr, bv, act);
        return;
    }
#endif
    int64_t done = 0;
#if ZOO_X86
    if (has_avx2 && (done = AVX2_PART(tw)) > 0) {
        if (kind == 0) csr_f32_row_avx2(vp, cp, ip[r], ip[r + 1], Xt, T, done, yr, bv, act);
        else b4_f32_row_avx2(vp, cp, ip[r], ip[r + 1], Xt, T, done, yr, bv, act);
        if (done == tw) return;
    }
#endif
    if (kind == 0) csr_f32_row_generic(vp, cp, ip[r], ip[r + 1], Xt + done, T, tw - done, yr + done, bv, act);
    else b4_f32_row_generic(vp, cp, ip[r], ip[r + 1], Xt + done, T, tw - done, yr + done, bv, act);
}

/* spmm_f32(kind, indptr, cols, vals, bias, X, Y, rows, in_features, T, threads[, act, tile]): kind 0 = CSR, 1 =
 * block-4 CSR; act 1 applies GELU on the way out. Tokens are processed in tiles of `tile` (default 128, measured
 * fastest here): every row passes over one tile of the input before the next, so long sequences keep it in L2. */
static PyObject *py_spmm_f32(PyObject *self, PyObject *args) {
    int kind, threads, act = 0;
    Py_ssize_t indptr, cols, vals, bias, X, Y, rows, in_f, T, tile = 0;
    if (!PyArg_ParseTuple(args, "innnnnnnnni|in", &kind, &indptr, &cols, &vals, &bias, &X, &Y, &rows, &in_f, &T, &threads, &act, &tile))
        return NULL;
    const int64_t *ip = PTR(const int64_t *, indptr);
    const float *vp = PTR(const float *, vals);
    const int32_t *cp = PTR(const int32_t *, cols);
    if (tile <= 0) tile = TILE;
    Py_BEGIN_ALLOW_THREADS
    set_threads(threads);
    for (Py_ssize_t t0 = 0; t0 < T; t0 += tile) {
        const Py_ssize_t tw = T - t0 < tile ? T - t0 : tile;
#pragma omp parallel for schedule(dynamic, 8)
        for (Py_ssize_t r = 0; r < rows; r++)
            f32_row(kind, ip, cp, vp, PTR(const float *, bias), PTR(const float *, X), PTR(float *, Y), T, t0, tw, r, act);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* spmm_rg(nw, gptr, rows, cols, vals, bias, X, Y, groups, in_features, T, Xp, threads[, act]): the row-group
 * packings (nw 1 = CSR, 4 = block-4; see rg_f32_group_avx512). Xp is scratch of in_features x T rounded up to RG_TT
 * floats. One parallel region: the token tiles are packed, then each thread takes RG_BLOCK groups at a time and
 * passes every token tile over them; each output row is computed by one thread in a fixed order. */
static PyObject *py_spmm_rg(PyObject *self, PyObject *args) {
    int nw, threads, act = 0;
    Py_ssize_t gptr, rows, cols, vals, bias, X, Y, ngroups, in_f, T, Xp;
    if (!PyArg_ParseTuple(args, "innnnnnnnnnni|i", &nw, &gptr, &rows, &cols, &vals, &bias, &X, &Y, &ngroups, &in_f, &T, &Xp,
                          &threads, &act))
        return NULL;
    const int64_t *gp = PTR(const int64_t *, gptr);
    const int32_t *rp = PTR(const int32_t *, rows), *cp = PTR(const int32_t *, cols);
    const float *vp = PTR(const float *, vals), *bp = PTR(const float *, bias), *xp = PTR(const float *, X);
    float *yp = PTR(float *, Y), *xt = PTR(float *, Xp);
#if ZOO_X86
    const int64_t tt = has_avx512 || has_avx2 ? 16 : 8;
#else
    const int64_t tt = 8;
#endif
    const int64_t ntiles = (T + tt - 1) / tt, nblocks = (ngroups + RG_BLOCK - 1) / RG_BLOCK;
    Py_BEGIN_ALLOW_THREADS
    set_threads(threads);
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (Py_ssize_t f = 0; f < in_f; f++)
            for (int64_t k = 0; k < ntiles; k++) {
                const int64_t n = T - k * tt < tt ? T - k * tt : tt;
                float *dst = xt + (k * in_f + f) * tt;
                memcpy(dst, xp + f * T + k * tt, (size_t)n * sizeof(float));
                for (int64_t t = n; t < tt; t++) dst[t] = 0.0f;
            }
#pragma omp for schedule(dynamic, 1)
        for (Py_ssize_t blk = 0; blk < nblocks; blk++) {
            const int64_t g1 = (blk + 1) * RG_BLOCK < ngroups ? (blk + 1) * RG_BLOCK : ngroups;
            for (int64_t k = 0; k < ntiles; k++) {
                const int64_t t0 = k * tt, n = T - t0 < tt ? T - t0 : tt;
                const float *Xt = xt + k * in_f * tt;
                for (int64_t g = blk * RG_BLOCK; g < g1; g++) {
                    float *y[RG], bv[RG];
                    for (int i = 0; i < RG; i++) {
                        const int32_t r = rp[g * RG + i];
                        y[i] = r < 0 ? NULL : yp + (int64_t)r * T + t0;
                        bv[i] = r < 0 ? 0.0f : bp[r];
                    }
#if ZOO_X86
                    if (has_avx512) {
                        if (nw == 1) rg_csr_group_avx512(vp, cp, gp[g], gp[g + 1], Xt, y, bv, n, act);
                        else rg_b4_group_avx512(vp, cp, gp[g], gp[g + 1], Xt, y, bv, n, act);
                        continue;
                    }
                    if (has_avx2) {
                        if (nw == 1) rg_csr_group_avx2(vp, cp, gp[g], gp[g + 1], Xt, y, bv, n, act);
                        else rg_b4_group_avx2(vp, cp, gp[g], gp[g + 1], Xt, y, bv, n, act);
                        continue;
                    }
#endif
                    rg_f32_group_generic(nw, vp, cp, gp[g], gp[g + 1], Xt, tt, y, bv, n, act);
                }
            }
        }
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* Row r of the int8 block-4 product over tokens [t0, t0 + tw) of X8 [in/4][T][4] (VNNI; AVX2 whole groups of 8) */
static void i8_row(const int64_t *ip, const int32_t *gp, const int32_t *wp, const float *scale, const float *offset, const uint8_t *X8,
                   float *Y, int64_t T, int64_t t0, int64_t tw, int64_t r, int generic, int act) {
    const float sc = scale[r], of = offset[r];
    const uint8_t *xp = X8 + t0 * 4;
    float *yr = Y + r * T + t0;
#if ZOO_X86
    if (has_vnni && !generic) { b4_i8_row_vnni(wp, gp, ip[r], ip[r + 1], xp, T, tw, yr, sc, of, act); return; }
#endif
    int64_t done = 0;
#if ZOO_X86
    if (has_avx2 && !generic && (done = AVX2_PART(tw)) > 0) {
        b4_i8_row_avx2(wp, gp, ip[r], ip[r + 1], xp, T, done, yr, sc, of, act);
        if (done == tw) return;
    }
#endif
    b4_i8_row_generic(wp, gp, ip[r], ip[r + 1], xp + 4 * done, T, tw - done, yr + done, sc, of, act);
}

/* spmm_i8(indptr, groups, wpk, scale[rows], offset[rows], X8, Y, rows, T, threads, generic[, act, tile]): tokens in
 * tiles of `tile` (default 128) so the uint8 activations a tile gathers stay in L1/L2 while every row passes over them. */
static PyObject *py_spmm_i8(PyObject *self, PyObject *args) {
    int threads, generic, act = 0;
    Py_ssize_t indptr, groups, wpk, scale, offset, X8, Y, rows, T, tile = 0;
    if (!PyArg_ParseTuple(args, "nnnnnnnnnii|in", &indptr, &groups, &wpk, &scale, &offset, &X8, &Y, &rows, &T, &threads, &generic, &act,
                          &tile))
        return NULL;
    const int64_t *ip = PTR(const int64_t *, indptr);
    const int32_t *wp = PTR(const int32_t *, wpk), *gp = PTR(const int32_t *, groups);
    if (tile <= 0) tile = TILE;
    Py_BEGIN_ALLOW_THREADS
    set_threads(threads);
    for (Py_ssize_t t0 = 0; t0 < T; t0 += tile) {
        const Py_ssize_t tw = T - t0 < tile ? T - t0 : tile;
#pragma omp parallel for schedule(dynamic, 8)
        for (Py_ssize_t r = 0; r < rows; r++)
            i8_row(ip, gp, wp, PTR(const float *, scale), PTR(const float *, offset), PTR(const uint8_t *, X8), PTR(float *, Y), T, t0,
                   tw, r, generic, act);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

#if ZOO_X86
__attribute__((target("avx512f")))
static void gelu_span_avx512(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, m, gelu16(_mm512_maskz_loadu_ps(m, x + i)));
    }
}
#endif

static PyObject *py_gelu(PyObject *self, PyObject *args) {
    Py_ssize_t x, n; int threads;
    if (!PyArg_ParseTuple(args, "nni", &x, &n, &threads)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    set_threads(threads);
    const Py_ssize_t chunk = 4096;
#pragma omp parallel for schedule(static)
    for (Py_ssize_t i = 0; i < n; i += chunk) {
        float *p = PTR(float *, x) + i;
        const int64_t len = (n - i) < chunk ? (n - i) : chunk;
#if ZOO_X86
        if (has_avx512) { gelu_span_avx512(p, len); continue; }
#endif
        int64_t j = 0;
#if ZOO_X86
        if (has_avx2) gelu_span_avx2(p, j = AVX2_PART(len));
#endif
        for (; j < len; j++) p[j] = gelu1(p[j]);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* X float [F][T] -> uint8 [F/4][T][4] (the VNNI operand layout), q = clamp(round_half_even(x / s) + zp, 0, 255) */
static void quant_group_generic(const float *X, uint8_t *out, int64_t g, int64_t T, int64_t t0, float s, float zp) {
    for (int64_t t = t0; t < T; t++)
        for (int j = 0; j < 4; j++) {
            float q = nearbyintf(X[(4 * g + j) * T + t] / s) + zp;
            q = q < 0.0f ? 0.0f : (q > 255.0f ? 255.0f : q);
            out[(g * T + t) * 4 + j] = (uint8_t)q;
        }
}

#if ZOO_X86

/* 16 tokens of 4 features -> 16 little-endian int32 words, one byte per feature */
__attribute__((target("avx512f")))
static void quant_group_avx512(const float *X, uint8_t *out, int64_t g, int64_t T, float s, float zp) {
    const __m512 vs = _mm512_set1_ps(s), vz = _mm512_set1_ps(zp);
    const float *x = X + 4 * g * T;
    for (int64_t t = 0; t < T; t += 16) {
        const __mmask16 m = tail_mask(T - t);
        _mm512_mask_storeu_epi32(out + (g * T + t) * 4, m, quant4x16(x + t, T, m, vs, vz));
    }
}
#endif

static void quant_group(const float *X, uint8_t *out, int64_t g, int64_t T, float s, float zp) {
#if ZOO_X86
    if (has_avx512) { quant_group_avx512(X, out, g, T, s, zp); return; }
    if (has_avx2) quant_group_avx2(X, out, g, T, s, zp);
#endif
    quant_group_generic(X, out, g, T, has_avx2 ? AVX2_PART(T) : 0, s, zp);
}

static PyObject *py_quantize(PyObject *self, PyObject *args) {
    Py_ssize_t X, out, F, T; float s, zp; int threads;
    if (!PyArg_ParseTuple(args, "nnnnffi", &X, &out, &F, &T, &s, &zp, &threads)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    set_threads(threads);
#pragma omp parallel for schedule(static)
    for (Py_ssize_t g = 0; g < F / 4; g++) quant_group(PTR(const float *, X), PTR(uint8_t *, out), g, T, s, zp);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* LayerNorm over the feature axis of [F][T] activations, with the residual added first:
 * O[:, t] = (S - mean) / sqrt(var + eps) * gamma + beta, S = X[:, t] + R[:, t] (R may be NULL). O may alias X or R. */
static void layernorm_generic(const float *X, const float *R, float *O, const float *g, const float *b, float eps,
                              int64_t F, int64_t T, int64_t t) {
    float sum = 0.0f, var = 0.0f;
    for (int64_t f = 0; f < F; f++) { const float v = X[f * T + t] + (R ? R[f * T + t] : 0.0f); O[f * T + t] = v; sum += v; }
    const float mean = sum / (float)F;
    for (int64_t f = 0; f < F; f++) { const float d = O[f * T + t] - mean; var += d * d; }
    const float inv = 1.0f / sqrtf(var / (float)F + eps);
    for (int64_t f = 0; f < F; f++) O[f * T + t] = (O[f * T + t] - mean) * inv * g[f] + b[f];
}

#if ZOO_X86
__attribute__((target("avx512f")))
static void layernorm_avx512(const float *X, const float *R, float *O, const float *g, const float *b, float eps,
                             int64_t F, int64_t T, int64_t t) {
    const __mmask16 m = tail_mask(T - t);
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    for (int64_t f = 0; f < F; f++) {
        __m512 v = _mm512_maskz_loadu_ps(m, X + f * T + t);
        if (R) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, R + f * T + t));
        _mm512_mask_storeu_ps(O + f * T + t, m, v);
        if (f & 1) s1 = _mm512_add_ps(s1, v); else s0 = _mm512_add_ps(s0, v);
    }
    const __m512 mean = _mm512_div_ps(_mm512_add_ps(s0, s1), _mm512_set1_ps((float)F));
    __m512 v0 = _mm512_setzero_ps(), v1 = v0;
    for (int64_t f = 0; f < F; f++) {
        const __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, O + f * T + t), mean);
        if (f & 1) v1 = _mm512_fmadd_ps(d, d, v1); else v0 = _mm512_fmadd_ps(d, d, v0);
    }
    const __m512 var = _mm512_div_ps(_mm512_add_ps(v0, v1), _mm512_set1_ps((float)F));
    const __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_sqrt_ps(_mm512_add_ps(var, _mm512_set1_ps(eps))));
    for (int64_t f = 0; f < F; f++) {
        const __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, O + f * T + t), mean), inv);
        _mm512_mask_storeu_ps(O + f * T + t, m, _mm512_fmadd_ps(d, _mm512_set1_ps(g[f]), _mm512_set1_ps(b[f])));
    }
}
#endif

/* LayerNorm of tokens [t, min(t + 16, T)) by the body this CPU runs: AVX-512 16 at once (masked), AVX2 whole groups
 * of 8 and the portable body for the rest */
static void layernorm_tokens(const float *X, const float *R, float *O, const float *g, const float *b, float eps, int64_t F,
                             int64_t T, int64_t t) {
    const int64_t end = T - t < 16 ? T : t + 16;
#if ZOO_X86
    if (has_avx512) { layernorm_avx512(X, R, O, g, b, eps, F, T, t); return; }
    if (has_avx2)
        for (; t + 8 <= end; t += 8) layernorm_avx2(X, R, O, g, b, eps, F, T, t);
#endif
    for (; t < end; t++) layernorm_generic(X, R, O, g, b, eps, F, T, t);
}

/* Tokens per LayerNorm panel: each token's features lie T floats apart, and at T a multiple of 1024 (rows 4 KB apart)
 * they fall into so few cache sets that the three passes over them went to L3 every time (Zen 3, 768 features: 0.9 us
 * per token at T 384, 3.8-4.3 at T 1024 and 3072). A panel of 16 tokens is copied (residual added) into a contiguous
 * [F][16] buffer that stays in L2, normalized there by the same bodies (so with the same result), and copied back. */
#define LN_PANEL 16

/* LayerNorm of the LN_PANEL tokens from t, through the private [F][LN_PANEL] buffer P */
#if ZOO_X86
/* LayerNorm of up to 64 tokens [t, t + n) straight on [F][T] rows: each row's 64 tokens are 4 zmm, so every pass streams
 * rows front to back (a 16-token panel gathered one 64-byte line per feature, 512 bytes apart, and waited on L2/L3
 * latency). Per token lane it does exactly what layernorm_avx512 does (sums over even and odd features apart, the same
 * divisions), so the same bits. O may alias X or R. With `panels`, the normalised tokens are also written as the 16-token
 * input panels of the next emitted Linear: fp32 [P][F][16] (qs 0) or uint8 [P][F/4][16][4] quantized with (qs, qz),
 * this chunk's first panel being p0 (needs F % 4 == 0). */

__attribute__((target("avx512f")))
static void layernorm_chunk_avx512(const float *X, const float *R, float *O, const float *g, const float *b, float eps, int64_t F,
                                   int64_t T, int64_t t, int64_t n, uint8_t *panels, int64_t p0, float qs, float qz) {
    const __mmask16 m[4] = {tail_mask(n), tail_mask(n - 16), tail_mask(n - 32), tail_mask(n - 48)};
    __m512 s0[4], s1[4];
    for (int v = 0; v < 4; v++) s0[v] = s1[v] = _mm512_setzero_ps();
#define LN_IN(f, v) (R ? _mm512_add_ps(_mm512_maskz_loadu_ps(m[v], X + (f) * T + t + 16 * (v)), _mm512_maskz_loadu_ps(m[v], R + (f) * T + t + 16 * (v))) \
                        : _mm512_maskz_loadu_ps(m[v], X + (f) * T + t + 16 * (v)))
    for (int64_t f = 0; f < F; f++) {
        for (int v = 0; v < 4; v++) {
            const __m512 x = LN_IN(f, v);
            if (f & 1) s1[v] = _mm512_add_ps(s1[v], x); else s0[v] = _mm512_add_ps(s0[v], x);
        }
    }
    __m512 mean[4], inv[4];
    for (int v = 0; v < 4; v++) {
        mean[v] = _mm512_div_ps(_mm512_add_ps(s0[v], s1[v]), _mm512_set1_ps((float)F));
        s0[v] = s1[v] = _mm512_setzero_ps();
    }
    for (int64_t f = 0; f < F; f++)
        for (int v = 0; v < 4; v++) {
            const __m512 d = _mm512_sub_ps(LN_IN(f, v), mean[v]);
            if (f & 1) s1[v] = _mm512_fmadd_ps(d, d, s1[v]); else s0[v] = _mm512_fmadd_ps(d, d, s0[v]);
        }
    for (int v = 0; v < 4; v++) {
        const __m512 var = _mm512_div_ps(_mm512_add_ps(s0[v], s1[v]), _mm512_set1_ps((float)F));
        inv[v] = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_sqrt_ps(_mm512_add_ps(var, _mm512_set1_ps(eps))));
    }
    const int nv = (int)((n + 15) / 16);
    const __m512 vs = _mm512_set1_ps(qs), vz = _mm512_set1_ps(qz);
    for (int64_t f = 0; f < F; f++) {
        for (int v = 0; v < 4; v++) {
            const __m512 d = _mm512_mul_ps(_mm512_sub_ps(LN_IN(f, v), mean[v]), inv[v]);
            const __m512 y = _mm512_fmadd_ps(d, _mm512_set1_ps(g[f]), _mm512_set1_ps(b[f]));
            _mm512_mask_storeu_ps(O + f * T + t + 16 * v, m[v], y);
            if (panels && v < nv) {
                if (qs <= 0.0f) {
                    _mm512_storeu_ps((float *)(void *)panels + ((p0 + v) * F + f) * 16, y);
                } else {  /* byte f % 4 of each lane: the group's dword is complete once its 4th feature is in */
                    __m512i *w = (__m512i *)(void *)(panels + ((p0 + v) * (F / 4) + f / 4) * 64);
                    const __m512i q = _mm512_slli_epi32(quant16(y, vs, vz), 8 * (int)(f & 3));
                    _mm512_storeu_si512((void *)w, (f & 3) ? _mm512_or_si512(_mm512_loadu_si512((const void *)w), q) : q);
                }
            }
        }
    }
#undef LN_IN
}
#endif

static void layernorm_panel(const float *xp, const float *rp, float *op, const float *gp, const float *bp, float eps, int64_t F,
                            int64_t T, int64_t t, float *P) {
    for (int64_t f = 0; f < F; f++) {
        const float *x = xp + f * T + t;
        float *p = P + f * LN_PANEL;
        if (rp) {
            const float *r = rp + f * T + t;
            for (int j = 0; j < LN_PANEL; j++) p[j] = x[j] + r[j];
        } else {
            memcpy(p, x, LN_PANEL * sizeof(float));
        }
    }
    layernorm_tokens(P, NULL, P, gp, bp, eps, F, LN_PANEL, 0);
    for (int64_t f = 0; f < F; f++) memcpy(op + f * T + t, P + f * LN_PANEL, LN_PANEL * sizeof(float));
}

/* layernorm(X, R or 0, O, gamma, beta, eps, F, T, threads) */
static PyObject *py_layernorm(PyObject *self, PyObject *args) {
    Py_ssize_t X, R, O, g, b, F, T; float eps; int threads;
    if (!PyArg_ParseTuple(args, "nnnnnfnni", &X, &R, &O, &g, &b, &eps, &F, &T, &threads)) return NULL;
    const float *xp = PTR(const float *, X), *rp = PTR(const float *, R), *gp = PTR(const float *, g), *bp = PTR(const float *, b);
    float *op = PTR(float *, O);
    const Py_ssize_t panels = T / LN_PANEL;
    int failed = 0;
#if ZOO_X86
    if (has_avx512) {
        Py_BEGIN_ALLOW_THREADS
        set_threads(threads);
#pragma omp parallel for schedule(static)
        for (Py_ssize_t t = 0; t < T; t += 64) layernorm_chunk_avx512(xp, rp, op, gp, bp, eps, F, T, t, T - t < 64 ? T - t : 64, NULL, 0, 0, 0);
        Py_END_ALLOW_THREADS
        Py_RETURN_NONE;
    }
#endif
    Py_BEGIN_ALLOW_THREADS
    set_threads(threads);
    if (panels > 0) {
#pragma omp parallel
        {
            float *P = (float *)malloc((size_t)F * LN_PANEL * sizeof(float));
            if (!P) {
#pragma omp atomic write
                failed = 1;
            }
#pragma omp for schedule(static)
            for (Py_ssize_t k = 0; k < panels; k++)
                if (P) layernorm_panel(xp, rp, op, gp, bp, eps, F, T, k * LN_PANEL, P);
            free(P);
        }
    }
    if (panels * LN_PANEL < T) layernorm_tokens(xp, rp, op, gp, bp, eps, F, T, panels * LN_PANEL);
    Py_END_ALLOW_THREADS
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* features [f0, f0 + 16) of every token's embedding sum, written feature-major through a 16 x 16 transpose tile */
static void embed_features(const float *wp, const float *pp, const float *tp, const int64_t *ip, const int64_t *typ, int64_t S,
                           int64_t F, int64_t T, int64_t f0, float *op) {
    const int64_t nf = F - f0 < 16 ? F - f0 : 16;
    float tile[16][16];
    for (int64_t t0 = 0; t0 < T; t0 += 16) {
        const int64_t nt = T - t0 < 16 ? T - t0 : 16;
        for (int64_t i = 0; i < nt; i++) {
            const int64_t t = t0 + i;
            const float *w = wp + ip[t] * F + f0, *p = pp + (t % S) * F + f0, *y = tp + typ[t] * F + f0;
            for (int64_t j = 0; j < nf; j++) tile[j][i] = w[j] + p[j] + y[j];
        }
        for (int64_t j = 0; j < nf; j++) memcpy(op + (f0 + j) * T + t0, tile[j], (size_t)nt * sizeof(float));
    }
}

/* embed(word [V][F], position [P][F], token_type [2][F], ids int64 [B][S], types int64 [B][S], B, S, F, out [F][B*S],
 * threads): the three embedding rows summed per token and written feature-major, 16 x 16 tiles transposed on the way. */
static PyObject *py_embed(PyObject *self, PyObject *args) {
    Py_ssize_t word, pos, type, ids, types, B, S, F, out; int threads;
    if (!PyArg_ParseTuple(args, "nnnnnnnnni", &word, &pos, &type, &ids, &types, &B, &S, &F, &out, &threads)) return NULL;
    const float *wp = PTR(const float *, word), *pp = PTR(const float *, pos), *tp = PTR(const float *, type);
    const int64_t *ip = PTR(const int64_t *, ids), *typ = PTR(const int64_t *, types);
    float *op = PTR(float *, out);
    const int64_t T = B * S;
    Py_BEGIN_ALLOW_THREADS
    set_threads(threads);
#pragma omp parallel for schedule(static)
    for (Py_ssize_t f0 = 0; f0 < F; f0 += 16) embed_features(wp, pp, tp, ip, typ, S, F, T, f0, op);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

#include "_jit.h"
#include "_forward.h"

/* fake_quant(src, dst, n, scale, zero_point, qmin, qmax, threads): dst = (clamp(round_half_even(src / scale) + zp, qmin,
 * qmax) - zp) * scale in float32, as QParams.fake computes it (the engine's embedding tables, fake-quantized once per
 * compile: 23 M values for BERT-base, ~0.5 s in numpy) */
__attribute__((target_clones("avx512f", "avx2", "default")))
static void fake_quant_span(const float *x, float *y, int64_t n, float scale, float zp, float lo, float hi) {
    for (int64_t i = 0; i < n; i++) {
        float q = nearbyintf(x[i] / scale) + zp;
        q = q < lo ? lo : (q > hi ? hi : q);
        y[i] = (q - zp) * scale;
    }
}

static PyObject *py_fake_quant(PyObject *self, PyObject *args) {
    Py_ssize_t src, dst, n;
    float scale, zp, lo, hi;
    int threads;
    if (!PyArg_ParseTuple(args, "nnnffffi", &src, &dst, &n, &scale, &zp, &lo, &hi, &threads)) return NULL;
    if (!(scale > 0.0f) || n < 0 || !(lo <= hi)) { PyErr_SetString(PyExc_ValueError, "fake_quant: bad scale, range or size"); return NULL; }
    Py_BEGIN_ALLOW_THREADS
    set_threads(threads);
    const Py_ssize_t chunk = 1 << 16;
#pragma omp parallel for schedule(static)
    for (Py_ssize_t i = 0; i < n; i += chunk)
        fake_quant_span(PTR(const float *, src) + i, PTR(float *, dst) + i, n - i < chunk ? n - i : chunk, scale, zp, lo, hi);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_features(PyObject *self, PyObject *args) {
    return Py_BuildValue("{s:O,s:O,s:O,s:O,s:O}", "avx512", has_avx512 ? Py_True : Py_False, "avx2", has_avx2 ? Py_True : Py_False,
                         "vnni", has_vnni ? Py_True : Py_False, "jit", ZOO_JIT && has_avx512 && !jit_off ? Py_True : Py_False,
                         "jit_off", jit_off ? Py_True : Py_False);
}

static PyMethodDef methods[] = {
    {"spmm_f32", py_spmm_f32, METH_VARARGS, "fp32 CSR / block-4 CSR sparse x dense product"},
    {"spmm_rg", py_spmm_rg, METH_VARARGS, "fp32 row-group CSR / block-4 product over L1 token tiles"},
    {"spmm_i8", py_spmm_i8, METH_VARARGS, "int8 block-4 x uint8 product (VNNI or AVX2 when present)"},
    {"attention", py_attention, METH_VARARGS, "multi-head attention over features x tokens activations"},
    {"gelu", py_gelu, METH_VARARGS, "in-place exact-erf GELU"},
    {"quantize", py_quantize, METH_VARARGS, "fp32 [F][T] -> uint8 [F/4][T][4]"},
    {"embed", py_embed, METH_VARARGS, "sum of word, position and token-type embeddings, feature-major"},
    {"layernorm", py_layernorm, METH_VARARGS, "residual add + LayerNorm over the feature axis of [F][T]"},
    {"jit_build", py_jit_build, METH_VARARGS, "emit pattern-specialised machine code for one sparse Linear"},
    {"jit_run", py_jit_run, METH_VARARGS, "run an emitted sparse Linear over token panels"},
    {"jit_code", py_jit_code, METH_VARARGS, "the emitted code of a Linear (bytes, stream length)"},
    {"plan_new", py_plan_new, METH_VARARGS, "a forward plan over packed Linears (built once per engine)"},
    {"plan_arena", py_plan_arena, METH_VARARGS, "scratch bytes one forward over B x S tokens needs"},
    {"forward", py_forward, METH_VARARGS, "embeddings to the last layer's hidden state in one call"},
    {"fake_quant", py_fake_quant, METH_VARARGS, "quantize-dequantize float32 values (QParams.fake)"},
    {"features", py_features, METH_NOARGS, "which CPU paths are active"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "obert-zoo sparse kernels", -1, methods};

PyMODINIT_FUNC PyInit__kernels(void) {
#if ZOO_X86 && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    has_avx512 = __builtin_cpu_supports("avx512f") && getenv("ZOO_NO_AVX512") == NULL;
    has_vnni = has_avx512 && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw");
    has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && getenv("ZOO_NO_AVX2") == NULL;
#endif
    const char *nojit = getenv("ZOO_NO_JIT");
    jit_off = nojit != NULL && *nojit != '\0' && strcmp(nojit, "0") != 0;
    return PyModule_Create(&module);
}
