/* Sparse encoder kernels for obert-zoo.
 *
 * Activations are laid out features x tokens (row-major [features][T]) so that every non-zero weight
 * drives contiguous vector work over tokens. Three Linear kernels:
 *   csr_f32      : Y[out][T] = W_csr X + b, fp32, unstructured or block-4 weights (CSR).
 *   b4_f32       : same with block-4 CSR (one column index per 4 weights).
 *   b4_int8      : int8 block-4 weights x uint8 activations in VNNI layout [in/4][T][4] -> int32 -> fp32.
 * plus the elementwise pieces that would otherwise dominate (GELU, softmax, quantize+interleave).
 * Each hot kernel has an AVX-512 (VNNI for int8) body selected at run time and a portable C body.
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

static int has_avx512 = 0, has_vnni = 0;

/* ------------------------------------------------------------------ fp32 CSR (portable) */
static void csr_f32_row_generic(const float *vals, const int32_t *cols, int64_t a, int64_t b, const float *X, int64_t ldx,
                                int64_t T, float *y, float bias) {
    for (int64_t t = 0; t < T; t++) y[t] = bias;
    for (int64_t k = a; k < b; k++) {
        const float w = vals[k];
        const float *x = X + (int64_t)cols[k] * ldx;
        for (int64_t t = 0; t < T; t++) y[t] += w * x[t];
    }
}

#if ZOO_X86
__attribute__((target("avx512f")))
static void csr_f32_row_avx512(const float *vals, const int32_t *cols, int64_t a, int64_t b, const float *X, int64_t ldx,
                               int64_t T, float *y, float bias) {
    int64_t t0 = 0;
    for (; t0 + TILE <= T; t0 += TILE) {
        __m512 c0 = _mm512_set1_ps(bias), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
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
        _mm512_storeu_ps(o, c0); _mm512_storeu_ps(o + 16, c1); _mm512_storeu_ps(o + 32, c2); _mm512_storeu_ps(o + 48, c3);
        _mm512_storeu_ps(o + 64, c4); _mm512_storeu_ps(o + 80, c5); _mm512_storeu_ps(o + 96, c6); _mm512_storeu_ps(o + 112, c7);
    }
    for (; t0 + 64 <= T; t0 += 64) {
        __m512 c0 = _mm512_set1_ps(bias), c1 = c0, c2 = c0, c3 = c0;
        for (int64_t k = a; k < b; k++) {
            const __m512 w = _mm512_set1_ps(vals[k]);
            const float *x = X + (int64_t)cols[k] * ldx + t0;
            c0 = _mm512_fmadd_ps(w, _mm512_loadu_ps(x), c0);
            c1 = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + 16), c1);
            c2 = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + 32), c2);
            c3 = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + 48), c3);
        }
        _mm512_storeu_ps(y + t0, c0); _mm512_storeu_ps(y + t0 + 16, c1); _mm512_storeu_ps(y + t0 + 32, c2); _mm512_storeu_ps(y + t0 + 48, c3);
    }
    for (; t0 < T; t0 += 16) {  /* tail: one (masked) vector at a time */
        const int64_t n = T - t0 < 16 ? T - t0 : 16;
        const __mmask16 m = (__mmask16)((1u << n) - 1u);
        __m512 c = _mm512_set1_ps(bias);
        for (int64_t k = a; k < b; k++)
            c = _mm512_fmadd_ps(_mm512_set1_ps(vals[k]), _mm512_maskz_loadu_ps(m, X + (int64_t)cols[k] * ldx + t0), c);
        _mm512_mask_storeu_ps(y + t0, m, c);
    }
}

/* block-4 CSR: each block = 4 weights on input features c..c+3 */
__attribute__((target("avx512f")))
static void b4_f32_row_avx512(const float *vals, const int32_t *cols, int64_t a, int64_t b, const float *X, int64_t ldx,
                              int64_t T, float *y, float bias) {
    int64_t t0 = 0;
    for (; t0 + TILE <= T; t0 += TILE) {
        __m512 c[8];
        for (int i = 0; i < 8; i++) c[i] = _mm512_set1_ps(bias);
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
        for (int i = 0; i < 8; i++) _mm512_storeu_ps(y + t0 + 16 * i, c[i]);
    }
    for (; t0 < T; t0 += 16) {
        const int64_t n = T - t0 < 16 ? T - t0 : 16;
        const __mmask16 m = (__mmask16)((1u << n) - 1u);
        __m512 c = _mm512_set1_ps(bias);
        for (int64_t k = a; k < b; k++) {
            const float *x = X + (int64_t)cols[k] * ldx + t0;
            for (int j = 0; j < 4; j++)
                c = _mm512_fmadd_ps(_mm512_set1_ps(vals[4 * k + j]), _mm512_maskz_loadu_ps(m, x + j * ldx), c);
        }
        _mm512_mask_storeu_ps(y + t0, m, c);
    }
}

/* int8 block-4: X8 is uint8 [in/4][T][4]; each block weight is 4 int8 packed in an int32 */
__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void b4_i8_row_vnni(const int32_t *wpk, const int32_t *groups, int64_t a, int64_t b, const uint8_t *X8, int64_t T,
                           float *y, float scale, float offset) {
    int64_t t0 = 0;
    const __m512 vs = _mm512_set1_ps(scale), vo = _mm512_set1_ps(offset);
    for (; t0 + TILE <= T; t0 += TILE) {
        __m512i c[8];
        for (int i = 0; i < 8; i++) c[i] = _mm512_setzero_si512();
        for (int64_t k = a; k < b; k++) {
            const __m512i w = _mm512_set1_epi32(wpk[k]);
            const uint8_t *x = X8 + ((int64_t)groups[k] * T + t0) * 4;
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) c[i] = _mm512_dpbusd_epi32(c[i], _mm512_loadu_si512((const void *)(x + 64 * i)), w);
        }
        for (int i = 0; i < 8; i++) _mm512_storeu_ps(y + t0 + 16 * i, _mm512_fmadd_ps(_mm512_cvtepi32_ps(c[i]), vs, vo));
    }
    for (; t0 < T; t0 += 16) {
        const int64_t n = T - t0 < 16 ? T - t0 : 16;
        const __mmask16 m = (__mmask16)((1u << n) - 1u);
        __m512i c = _mm512_setzero_si512();
        for (int64_t k = a; k < b; k++)
            c = _mm512_dpbusd_epi32(c, _mm512_maskz_loadu_epi32(m, (const void *)(X8 + ((int64_t)groups[k] * T + t0) * 4)),
                                    _mm512_set1_epi32(wpk[k]));
        _mm512_mask_storeu_ps(y + t0, m, _mm512_fmadd_ps(_mm512_cvtepi32_ps(c), vs, vo));
    }
}
#endif

static void b4_f32_row_generic(const float *vals, const int32_t *cols, int64_t a, int64_t b, const float *X, int64_t ldx,
                               int64_t T, float *y, float bias) {
    for (int64_t t = 0; t < T; t++) y[t] = bias;
    for (int64_t k = a; k < b; k++)
        for (int j = 0; j < 4; j++) {
            const float w = vals[4 * k + j];
            const float *x = X + ((int64_t)cols[k] + j) * ldx;
            for (int64_t t = 0; t < T; t++) y[t] += w * x[t];
        }
}

static void b4_i8_row_generic(const int32_t *wpk, const int32_t *groups, int64_t a, int64_t b, const uint8_t *X8, int64_t T,
                              float *y, float scale, float offset) {
    for (int64_t t = 0; t < T; t++) {
        int32_t acc = 0;
        for (int64_t k = a; k < b; k++) {
            const int8_t *w = (const int8_t *)&wpk[k];
            const uint8_t *x = X8 + ((int64_t)groups[k] * T + t) * 4;
            acc += (int32_t)x[0] * w[0] + (int32_t)x[1] * w[1] + (int32_t)x[2] * w[2] + (int32_t)x[3] * w[3];
        }
        y[t] = (float)acc * scale + offset;
    }
}

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

__attribute__((target_clones("avx512f", "avx2", "default")))
static void gelu_span(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i];
        x[i] = 0.5f * v * (1.0f + erf_approx(v * 0.70710678118654752f));
    }
}

/* softmax over rows of n with an additive per-column mask; scale applied first */
__attribute__((target_clones("avx512f", "avx2", "default")))
static void softmax_row(float *s, const float *mask, int64_t n, float scale) {
    float mx = -3.0e38f;
    for (int64_t i = 0; i < n; i++) { s[i] = s[i] * scale + mask[i]; mx = s[i] > mx ? s[i] : mx; }
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) { s[i] = exp_neg(s[i] - mx); sum += s[i]; }
    const float inv = 1.0f / sum;
    for (int64_t i = 0; i < n; i++) s[i] *= inv;
}

/* X float [F][T] -> uint8 [F/4][T][4], q = clamp(round_half_even(x / s) + zp, 0, 255) */
__attribute__((target_clones("avx512f", "avx2", "default")))
static void quant_group(const float *X, uint8_t *out, int64_t g, int64_t T, float s, float zp) {
    for (int64_t t = 0; t < T; t++)
        for (int j = 0; j < 4; j++) {
            float q = nearbyintf(X[(4 * g + j) * T + t] / s) + zp;
            q = q < 0.0f ? 0.0f : (q > 255.0f ? 255.0f : q);
            out[(g * T + t) * 4 + j] = (uint8_t)q;
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
/* y[0:len] = sum_c w[c * ws] * X[c * ldx + 0:len]  (a dense "row" product: scores rows and context rows) */
static void dense_row_generic(const float *w, int64_t ws, int64_t n, const float *X, int64_t ldx, int64_t len, float *y) {
    for (int64_t t = 0; t < len; t++) y[t] = 0.0f;
    for (int64_t c = 0; c < n; c++) {
        const float wc = w[c * ws];
        const float *x = X + c * ldx;
        for (int64_t t = 0; t < len; t++) y[t] += wc * x[t];
    }
}

#if ZOO_X86
__attribute__((target("avx512f")))
static void dense_row_avx512(const float *w, int64_t ws, int64_t n, const float *X, int64_t ldx, int64_t len, float *y) {
    int64_t t0 = 0;
    for (; t0 + 64 <= len; t0 += 64) {
        __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
        for (int64_t c = 0; c < n; c++) {
            const __m512 wc = _mm512_set1_ps(w[c * ws]);
            const float *x = X + c * ldx + t0;
            c0 = _mm512_fmadd_ps(wc, _mm512_loadu_ps(x), c0);
            c1 = _mm512_fmadd_ps(wc, _mm512_loadu_ps(x + 16), c1);
            c2 = _mm512_fmadd_ps(wc, _mm512_loadu_ps(x + 32), c2);
            c3 = _mm512_fmadd_ps(wc, _mm512_loadu_ps(x + 48), c3);
        }
        _mm512_storeu_ps(y + t0, c0); _mm512_storeu_ps(y + t0 + 16, c1); _mm512_storeu_ps(y + t0 + 32, c2); _mm512_storeu_ps(y + t0 + 48, c3);
    }
    for (; t0 < len; t0 += 16) {
        const int64_t r = len - t0 < 16 ? len - t0 : 16;
        const __mmask16 m = (__mmask16)((1u << r) - 1u);
        __m512 acc = _mm512_setzero_ps();
        for (int64_t c = 0; c < n; c++) acc = _mm512_fmadd_ps(_mm512_set1_ps(w[c * ws]), _mm512_maskz_loadu_ps(m, X + c * ldx + t0), acc);
        _mm512_mask_storeu_ps(y + t0, m, acc);
    }
}
#endif

static inline void dense_row(const float *w, int64_t ws, int64_t n, const float *X, int64_t ldx, int64_t len, float *y) {
#if ZOO_X86
    if (has_avx512) { dense_row_avx512(w, ws, n, X, ldx, len, y); return; }
#endif
    dense_row_generic(w, ws, n, X, ldx, len, y);
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

/* copy a [d][S] block with row stride T into a packed [d][S] buffer, fake-quantizing it */
static void gather_block(const float *src, int64_t T, int64_t d, int64_t S, float *dst, float scale, float zp) {
    for (int64_t c = 0; c < d; c++) memcpy(dst + c * S, src + c * T, (size_t)S * sizeof(float));
    fake_quant(dst, d * S, scale, zp);
}

/* attention(qkv [3H][T], out [H][T], mask_add [B][S], B, S, heads, d, scale, qp (12 floats: scale/zp of q, k, scores,
 * probs, v, context; scale 0 = none), threads). T = B * S; one task per (sequence, head). */
static PyObject *py_attention(PyObject *self, PyObject *args) {
    Py_ssize_t qkv, out, mask, B, S, heads, d, qp_ptr; float scale; int threads;
    if (!PyArg_ParseTuple(args, "nnnnnnnfni", &qkv, &out, &mask, &B, &S, &heads, &d, &scale, &qp_ptr, &threads)) return NULL;
    const float *qp = PTR(const float *, qp_ptr);
    const int64_t H = heads * d, T = B * S;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    set_threads(threads);
#pragma omp parallel
    {
        float *buf = (float *)malloc((size_t)(3 * d * S + 2 * S * S) * sizeof(float));
        if (!buf) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (Py_ssize_t task = 0; task < B * heads; task++) {
            if (!buf) continue;
            const int64_t b = task / heads, h = task % heads;
            float *Q = buf, *Kb = buf + d * S, *V = buf + 2 * d * S, *P = buf + 3 * d * S, *PT = P + S * S;
            const float *base = PTR(const float *, qkv) + b * S;
            gather_block(base + (h * d) * T, T, d, S, Q, qp[0], qp[1]);
            gather_block(base + (H + h * d) * T, T, d, S, Kb, qp[2], qp[3]);
            gather_block(base + (2 * H + h * d) * T, T, d, S, V, qp[8], qp[9]);
            for (int64_t i = 0; i < S; i++) dense_row(Q + i, S, d, Kb, S, S, P + i * S);  /* P[i][:] = sum_c Q[c][i] K[c][:] */
            fake_quant(P, S * S, qp[4], qp[5]);
            for (int64_t i = 0; i < S; i++) softmax_row(P + i * S, PTR(const float *, mask) + b * S, S, scale);
            fake_quant(P, S * S, qp[6], qp[7]);
            for (int64_t i = 0; i < S; i++)
                for (int64_t j = 0; j < S; j++) PT[j * S + i] = P[i * S + j];
            float *o = PTR(float *, out) + (h * d) * T + b * S;
            for (int64_t c = 0; c < d; c++) {  /* ctx[c][:] = sum_j V[c][j] P^T[j][:] */
                dense_row(V + c * S, 1, S, PT, S, S, o + c * T);
                fake_quant(o + c * T, S, qp[10], qp[11]);
            }
        }
        free(buf);
    }
    Py_END_ALLOW_THREADS
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* spmm_f32(kind, indptr, cols, vals, bias, X, Y, rows, in_features, T, threads): kind 0 = CSR, 1 = block-4 CSR.
 * Tokens are processed in tiles small enough that the input rows a tile gathers stay in L2. */
static PyObject *py_spmm_f32(PyObject *self, PyObject *args) {
    int kind, threads;
    Py_ssize_t indptr, cols, vals, bias, X, Y, rows, in_f, T;
    if (!PyArg_ParseTuple(args, "innnnnnnnni", &kind, &indptr, &cols, &vals, &bias, &X, &Y, &rows, &in_f, &T, &threads)) return NULL;
    const int64_t *ip = PTR(const int64_t *, indptr);
    const Py_ssize_t tile = (in_f * T * 4 > (640 << 10)) ? 64 : T;
    Py_BEGIN_ALLOW_THREADS
    set_threads(threads);
    for (Py_ssize_t t0 = 0; t0 < T; t0 += tile) {
        const Py_ssize_t tw = T - t0 < tile ? T - t0 : tile;
        const float *Xt = PTR(const float *, X) + t0;
#pragma omp parallel for schedule(dynamic, 8)
        for (Py_ssize_t r = 0; r < rows; r++) {
            const float bv = PTR(const float *, bias)[r];
            float *yr = PTR(float *, Y) + r * T + t0;
#if ZOO_X86
            if (has_avx512 && kind == 0) { csr_f32_row_avx512(PTR(const float *, vals), PTR(const int32_t *, cols), ip[r], ip[r + 1], Xt, T, tw, yr, bv); continue; }
            if (has_avx512 && kind == 1) { b4_f32_row_avx512(PTR(const float *, vals), PTR(const int32_t *, cols), ip[r], ip[r + 1], Xt, T, tw, yr, bv); continue; }
#endif
            if (kind == 1) b4_f32_row_generic(PTR(const float *, vals), PTR(const int32_t *, cols), ip[r], ip[r + 1], Xt, T, tw, yr, bv);
            else csr_f32_row_generic(PTR(const float *, vals), PTR(const int32_t *, cols), ip[r], ip[r + 1], Xt, T, tw, yr, bv);
        }
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* spmm_i8(indptr, groups, wpk, scale[rows], offset[rows], X8, Y, rows, T, threads, generic) */
static PyObject *py_spmm_i8(PyObject *self, PyObject *args) {
    int threads, generic;
    Py_ssize_t indptr, groups, wpk, scale, offset, X8, Y, rows, T;
    if (!PyArg_ParseTuple(args, "nnnnnnnnnii", &indptr, &groups, &wpk, &scale, &offset, &X8, &Y, &rows, &T, &threads, &generic)) return NULL;
    const int64_t *ip = PTR(const int64_t *, indptr);
    Py_BEGIN_ALLOW_THREADS
    set_threads(threads);
#pragma omp parallel for schedule(dynamic, 8)
    for (Py_ssize_t r = 0; r < rows; r++) {
        const float sc = PTR(const float *, scale)[r], of = PTR(const float *, offset)[r];
        float *yr = PTR(float *, Y) + r * T;
#if ZOO_X86
        if (has_vnni && !generic) { b4_i8_row_vnni(PTR(const int32_t *, wpk), PTR(const int32_t *, groups), ip[r], ip[r + 1], PTR(const uint8_t *, X8), T, yr, sc, of); continue; }
#endif
        b4_i8_row_generic(PTR(const int32_t *, wpk), PTR(const int32_t *, groups), ip[r], ip[r + 1], PTR(const uint8_t *, X8), T, yr, sc, of);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_gelu(PyObject *self, PyObject *args) {
    Py_ssize_t x, n; int threads;
    if (!PyArg_ParseTuple(args, "nni", &x, &n, &threads)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    set_threads(threads);
    const Py_ssize_t chunk = 4096;
#pragma omp parallel for schedule(static)
    for (Py_ssize_t i = 0; i < n; i += chunk) gelu_span(PTR(float *, x) + i, (n - i) < chunk ? (n - i) : chunk);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* softmax(s [B][H][S][S], mask_add [B][S], B, H, S, scale) in place */
static PyObject *py_softmax(PyObject *self, PyObject *args) {
    Py_ssize_t s, mask, B, H, S; float scale; int threads;
    if (!PyArg_ParseTuple(args, "nnnnnfi", &s, &mask, &B, &H, &S, &scale, &threads)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    set_threads(threads);
#pragma omp parallel for schedule(static)
    for (Py_ssize_t r = 0; r < B * H * S; r++) {
        const Py_ssize_t b = r / (H * S);
        softmax_row(PTR(float *, s) + r * S, PTR(const float *, mask) + b * S, S, scale);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
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

static PyObject *py_features(PyObject *self, PyObject *args) {
    return Py_BuildValue("{s:O,s:O}", "avx512", has_avx512 ? Py_True : Py_False, "vnni", has_vnni ? Py_True : Py_False);
}

static PyMethodDef methods[] = {
    {"spmm_f32", py_spmm_f32, METH_VARARGS, "fp32 CSR / block-4 CSR sparse x dense product"},
    {"spmm_i8", py_spmm_i8, METH_VARARGS, "int8 block-4 x uint8 product (VNNI when present)"},
    {"attention", py_attention, METH_VARARGS, "multi-head attention over features x tokens activations"},
    {"gelu", py_gelu, METH_VARARGS, "in-place exact-erf GELU"},
    {"softmax", py_softmax, METH_VARARGS, "in-place scaled, masked softmax over attention rows"},
    {"quantize", py_quantize, METH_VARARGS, "fp32 [F][T] -> uint8 [F/4][T][4]"},
    {"features", py_features, METH_NOARGS, "which CPU paths are active"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "obert-zoo sparse kernels", -1, methods};

PyMODINIT_FUNC PyInit__kernels(void) {
#if ZOO_X86 && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    has_avx512 = __builtin_cpu_supports("avx512f") && getenv("ZOO_NO_AVX512") == NULL;
    has_vnni = has_avx512 && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw");
#endif
    return PyModule_Create(&module);
}
