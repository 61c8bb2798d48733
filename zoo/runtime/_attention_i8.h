/* Integer attention for QAT models (included by _kernels.c; AVX-512 VNNI).
 *
 * The QAT graph fake-quantizes both inputs of both attention products to uint8: Q (asymmetric), K (symmetric, zero
 * point 128), the probabilities (asymmetric) and V (symmetric, 128). Their products are therefore integer dot
 * products, computed here exactly with vpdpbusd: scores = sq sk sum_c (Qq - zq)(Kq - 128) and context = sp sv sum_j
 * (Pq - zp)(Vq - 128), where the signed operand (Kq - 128 or Vq - 128) is int8 and the zero points of the unsigned one
 * come off through column sums. The reference computes the same products in fp32 on the dequantized values, so the
 * two differ by fp32 rounding only, which the output fake-quant absorbs but at rounding ties (one quantization step).
 * The softmax, its mask and scale, and every fake-quant point stay as in the fp32 path.
 *
 * Operand layouts (per (sequence, head) task, in the task's scratch): Q8 [d/4][Sp][4] (4 channels per 32-bit lane,
 * queries in lanes), K8 [d/4][Kp] dwords (4 channels of one key, broadcast), V8 [d][Kp] bytes (4 keys per dword,
 * broadcast), P8 [Kp/4][64][4] (4 keys per lane, one query block of 64 in lanes). Sp: queries rounded up to 64, Kp: the
 * visited keys rounded up to 16; padding keys carry int8 zeros so they add nothing. */

#define ATT_QB 64  /* queries per block: 4 zmm */

static int64_t att_round(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

static int64_t attention_i8_scratch(int64_t S, int64_t d) {
    const int64_t Sp = att_round(S, ATT_QB), Kp = att_round(S, ATT_QB);
    return d * Sp + d * Kp + 4 * Kp + d * Kp + 4 * d + 4 * S * ATT_QB + Kp * ATT_QB + 5 * 64;
}

/* whether this layer's attention points are the uint8 / symmetric-128 layout the integer path computes exactly */
static int attention_i8_applies(const float *qp, int64_t d) {
    return has_vnni && d % 4 == 0 && qp[0] > 0.0f && qp[2] > 0.0f && qp[3] == 128.0f && qp[4] > 0.0f && qp[6] > 0.0f && qp[8] > 0.0f &&
           qp[9] == 128.0f;
}

#if ZOO_X86
/* quant4x16 of a symmetric (zero point 128) operand as int8: q - 128 in each byte */
__attribute__((target("avx512f,avx512bw")))
static inline __m512i att_pack4_signed(const float *x, int64_t ld, __mmask16 m, __m512 s, __m512 z) {
    return _mm512_xor_si512(quant4x16(x, ld, m, s, z), _mm512_set1_epi32((int)0x80808080u));
}

/* fake quantization of 16 lanes: (clamp(round(x / s) + z, 0, 255) - z) * s */
__attribute__((target("avx512f")))
static inline __m512 att_fake16(__m512 x, float s, float z) {
    const __m512 vz = _mm512_set1_ps(z);
    return _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(quant16(x, _mm512_set1_ps(s), vz)), vz), _mm512_set1_ps(s));
}

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void attention_i8(const float *Q, const float *Kf, const float *Vf, float *o, const float *mb, int64_t S, int64_t Sk, int64_t d,
                         int64_t T, float scale, const float *qp, uint8_t *buf) {
    const int64_t Sp = att_round(S, ATT_QB), Kp = att_round(Sk, 16), G = d / 4;
    uint8_t *at = (uint8_t *)(((uintptr_t)buf + 63) & ~(uintptr_t)63);
    uint8_t *Q8 = at; at += d * Sp;
    int32_t *K8 = (int32_t *)(void *)at; at += d * Kp;
    int32_t *colK = (int32_t *)(void *)at; at += 4 * Kp + 64;
    uint8_t *V8 = at; at += d * Kp + 64;
    int32_t *rowV = (int32_t *)(void *)at; at += 4 * d + 64;
    at = (uint8_t *)(((uintptr_t)at + 63) & ~(uintptr_t)63);
    float *PT = (float *)(void *)at; at += 4 * Sk * ATT_QB;
    uint8_t *P8 = at;
    const __m512i zero = _mm512_setzero_si512(), s128 = _mm512_set1_epi32(128);
    const __m512 sq = _mm512_set1_ps(qp[0]), zq = _mm512_set1_ps(qp[1]), sk = _mm512_set1_ps(qp[2]), zk = _mm512_set1_ps(qp[3]);
    const __m512 sp = _mm512_set1_ps(qp[6]), zp = _mm512_set1_ps(qp[7]), sv = _mm512_set1_ps(qp[8]), zv = _mm512_set1_ps(qp[9]);
    /* operands: Q8 (queries past S quantize zeros: never stored), K8 and its per-key sums, V8 and its per-channel sums */
    for (int64_t g = 0; g < G; g++)
        for (int64_t i = 0; i < Sp; i += 16)
            _mm512_store_si512((void *)(Q8 + (g * Sp + i) * 4), quant4x16(Q + 4 * g * T + i, T, tail_mask(S - i), sq, zq));
    for (int64_t j = 0; j < Kp; j += 16) {
        const __mmask16 m = tail_mask(Sk - j);
        __m512i sum = zero;
        for (int64_t g = 0; g < G; g++) {
            const __m512i w = _mm512_maskz_mov_epi32(m, att_pack4_signed(Kf + 4 * g * T + j, T, m, sk, zk));
            _mm512_storeu_si512((void *)(K8 + g * Kp + j), w);
            for (int k = 0; k < 4; k++) sum = _mm512_add_epi32(sum, _mm512_srai_epi32(_mm512_slli_epi32(w, 24 - 8 * k), 24));
        }
        _mm512_storeu_si512((void *)(colK + j), sum);
    }
    for (int64_t c = 0; c < d; c++) {
        __m512i sum = zero;
        for (int64_t j = 0; j < Kp; j += 16) {
            const __mmask16 m = tail_mask(Sk - j);
            const __m512i q = _mm512_maskz_sub_epi32(m, quant16(_mm512_maskz_loadu_ps(m, Vf + c * T + j), sv, zv), s128);
            sum = _mm512_add_epi32(sum, q);
            _mm_storeu_si128((__m128i *)(void *)(V8 + c * Kp + j), _mm512_cvtepi32_epi8(q));
        }
        rowV[c] = _mm512_reduce_add_epi32(sum);
    }
    const float skq = qp[0] * qp[2], spv = qp[6] * qp[8];
    for (int64_t n0 = 0; n0 < S; n0 += ATT_QB) {
        const int64_t nb = S - n0 < ATT_QB ? S - n0 : ATT_QB;
        const __mmask16 mq[4] = {tail_mask(nb), tail_mask(nb - 16), tail_mask(nb - 32), tail_mask(nb - 48)};
        /* scores^T [key][query] = fake_quant(sq sk (Q8 . K8 - zq colK)) */
        for (int64_t j0 = 0; j0 < Sk; j0 += 4) {
            __m512i acc[4][4];
            for (int r = 0; r < 4; r++) for (int v = 0; v < 4; v++) acc[r][v] = zero;
            for (int64_t g = 0; g < G; g++) {
                const uint8_t *q = Q8 + (g * Sp + n0) * 4;
                const __m512i x0 = _mm512_load_si512((const void *)q), x1 = _mm512_load_si512((const void *)(q + 64));
                const __m512i x2 = _mm512_load_si512((const void *)(q + 128)), x3 = _mm512_load_si512((const void *)(q + 192));
                for (int r = 0; r < 4; r++) {
                    const __m512i w = _mm512_set1_epi32(K8[g * Kp + j0 + r]);
                    acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], x0, w); acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], x1, w);
                    acc[r][2] = _mm512_dpbusd_epi32(acc[r][2], x2, w); acc[r][3] = _mm512_dpbusd_epi32(acc[r][3], x3, w);
                }
            }
            for (int r = 0; r < 4 && j0 + r < Sk; r++) {
                const __m512i corr = _mm512_set1_epi32((int32_t)qp[1] * colK[j0 + r]);
                for (int v = 0; v < 4; v++) {
                    const __m512 sc = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][v], corr)), _mm512_set1_ps(skq));
                    _mm512_mask_storeu_ps(PT + (j0 + r) * nb + 16 * v, mq[v], att_fake16(sc, qp[4], qp[5]));
                }
            }
        }
        softmax_cols(PT, nb, Sk, nb, mb, scale);
        /* P8: the probabilities quantized, 4 keys per lane (keys past Sk: zeros, against V8's zero bytes) */
        for (int64_t jg = 0; jg < Kp / 4; jg++)
            for (int v = 0; v < 4; v++) {
                __m512i w = zero;
                for (int k = 0; k < 4; k++) {
                    const int64_t j = 4 * jg + k;
                    if (j >= Sk) break;
                    const __m512i q = quant16(_mm512_maskz_loadu_ps(mq[v], PT + j * nb + 16 * v), sp, zp);
                    w = _mm512_or_si512(w, _mm512_slli_epi32(q, 8 * k));
                }
                _mm512_store_si512((void *)(P8 + (jg * ATT_QB + 16 * v) * 4), w);
            }
        /* context [channel][query] = fake_quant(sp sv (P8 . V8 - zp rowV)); zp's share counts the real keys only */
        int32_t zsum[4];
        for (int64_t c0 = 0; c0 < d; c0 += 4) {
            __m512i acc[4][4];
            for (int r = 0; r < 4; r++) for (int v = 0; v < 4; v++) acc[r][v] = zero;
            for (int64_t jg = 0; jg < Kp / 4; jg++) {
                const uint8_t *p = P8 + jg * ATT_QB * 4;
                const __m512i x0 = _mm512_load_si512((const void *)p), x1 = _mm512_load_si512((const void *)(p + 64));
                const __m512i x2 = _mm512_load_si512((const void *)(p + 128)), x3 = _mm512_load_si512((const void *)(p + 192));
                for (int r = 0; r < 4; r++) {
                    int32_t wv;
                    memcpy(&wv, V8 + (c0 + r) * Kp + 4 * jg, 4);
                    const __m512i w = _mm512_set1_epi32(wv);
                    acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], x0, w); acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], x1, w);
                    acc[r][2] = _mm512_dpbusd_epi32(acc[r][2], x2, w); acc[r][3] = _mm512_dpbusd_epi32(acc[r][3], x3, w);
                }
            }
            for (int r = 0; r < 4; r++) zsum[r] = (int32_t)qp[7] * rowV[c0 + r];
            for (int r = 0; r < 4; r++)
                for (int v = 0; v < 4; v++) {
                    __m512 cx = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][v], _mm512_set1_epi32(zsum[r]))), _mm512_set1_ps(spv));
                    if (qp[10] > 0.0f) cx = att_fake16(cx, qp[10], qp[11]);
                    _mm512_mask_storeu_ps(o + (c0 + r) * T + n0 + 16 * v, mq[v], cx);
                }
        }
    }
}
#endif
