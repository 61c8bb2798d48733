/* Pattern-specialised sparse Linear kernels, emitted as x86-64 machine code at pack time (included by _kernels.c).
 *
 * For each block of AT output rows the emitter walks the union of the block's non-zero input features (fp32 CSR) or
 * 4-feature groups (int8 block-4) in ascending order and writes straight-line AVX-512 code: one 64-byte load of the
 * activation vector of that feature (16 tokens of a token panel, the feature's offset baked into the instruction),
 * then one FMA (fp32: vfmadd231ps acc, x, [w]{1to16}; int8: vpdpbusd acc, x, [w]{1to16}) into the accumulator of
 * every row of the block that has a non-zero there. The AT accumulators live in zmm0..zmm(AT-1) for the whole
 * block, so each loaded activation vector feeds every row that needs it and no index is read at run time. The
 * weights sit beside the code in one stream read sequentially, in emission order (fp32 blocks start with their
 * rows' biases). Each output still sums its terms in ascending feature order in one chain starting from the bias,
 * as csr_f32_row_avx512 does, so the fp32 results are bit-identical to the CSR kernel's, and int8 sums are exact.
 *
 * Activations enter as token panels: fp32 Xp[panel][in][16], int8 X8p[panel][in/4][16][4] (the VNNI operand
 * order), written by the run call itself from the usual [in][T] input (int8: quantized on the way, as
 * quant_group_avx512 does). A block's code runs once per panel and leaves its AT x 16 accumulators in a scratch
 * tile; the C epilogue (bias already in, int8 dequantise, GELU) writes them to Y[out][T].
 *
 * Memory: the code is emitted into an anonymous read-write mapping, which is then made read + execute (never
 * writable and executable at once). Every input is checked before anything is emitted (monotone row pointers,
 * columns in range and strictly ascending per row), and every emitted byte is bounds-checked against the size the
 * first (counting) pass measured: a hostile packing is refused with ValueError and never executed. A system that
 * refuses executable memory (W^X hardening, PR_SET_MDWE) makes jit_build raise OSError; the caller falls back to
 * the generic kernels. */
#if ZOO_X86 && defined(__linux__)
#include <sys/mman.h>
#include <errno.h>
#define ZOO_JIT 1
#else
#define ZOO_JIT 0
#endif

#define JIT_MAX_AT 28   /* accumulators; the rest of the 32 zmm rotate as activation registers */
#define JIT_PANEL 16    /* tokens per panel (one zmm of fp32 / int32) */

enum { JIT_F32 = 0, JIT_I8 = 1 };

typedef struct {
    uint8_t *p;      /* NULL while counting */
    size_t n, cap;
    int overflow;
} JitCode;

static void jit_put(JitCode *c, const uint8_t *b, size_t k) {
    if (c->p) {
        if (c->n + k > c->cap) { c->overflow = 1; return; }
        memcpy(c->p + c->n, b, k);
    }
    c->n += k;
}

/* EVEX.512 instruction with a [base + disp] memory operand; disp8*N compression when it fits. reg, vreg: zmm 0-31;
 * base: a GPR other than rsp/r12/rbp/r13 (no SIB or mod-0 special cases needed). */
static void evex_mem(JitCode *c, int pp, int mm, uint8_t op, int reg, int vreg, int base, int32_t disp, int N, int bcst) {
    uint8_t b[11];
    size_t k = 0;
    b[k++] = 0x62;
    b[k++] = (uint8_t)(((reg & 8) ? 0 : 0x80) | 0x40 | ((base & 8) ? 0 : 0x20) | ((reg & 16) ? 0 : 0x10) | mm);
    b[k++] = (uint8_t)((((~vreg) & 15) << 3) | 0x04 | pp);
    b[k++] = (uint8_t)(0x40 | (bcst ? 0x10 : 0) | ((vreg & 16) ? 0 : 0x08));
    b[k++] = op;
    if (disp % N == 0 && disp / N >= -128 && disp / N <= 127) {
        b[k++] = (uint8_t)(0x40 | ((reg & 7) << 3) | (base & 7));
        b[k++] = (uint8_t)(int8_t)(disp / N);
    } else {
        b[k++] = (uint8_t)(0x80 | ((reg & 7) << 3) | (base & 7));
        memcpy(b + k, &disp, 4);
        k += 4;
    }
    jit_put(c, b, k);
}

/* EVEX.512 reg, vreg, rm (all zmm) */
static void evex_rrr(JitCode *c, int pp, int mm, uint8_t op, int reg, int vreg, int rm) {
    const uint8_t b[6] = {
        0x62, (uint8_t)(((reg & 8) ? 0 : 0x80) | ((rm & 16) ? 0 : 0x40) | ((rm & 8) ? 0 : 0x20) | ((reg & 16) ? 0 : 0x10) | mm),
        (uint8_t)((((~vreg) & 15) << 3) | 0x04 | pp), (uint8_t)(0x40 | ((vreg & 16) ? 0 : 0x08)), op,
        (uint8_t)(0xC0 | ((reg & 7) << 3) | (rm & 7))};
    jit_put(c, b, 6);
}

enum { RDX = 2, RSI = 6, RDI = 7 };

static void add_imm32(JitCode *c, int gpr, int32_t imm) {
    uint8_t b[7] = {(uint8_t)(0x48 | ((gpr & 8) ? 1 : 0)), 0x81, (uint8_t)(0xC0 | (gpr & 7)), 0, 0, 0, 0};
    memcpy(b + 3, &imm, 4);
    jit_put(c, b, 7);
}

#define VMOVUPS_LOAD(c, zmm, base, disp) evex_mem(c, 0, 1, 0x10, zmm, 0, base, disp, 64, 0)
#define VMOVUPS_STORE(c, zmm, base, disp) evex_mem(c, 0, 1, 0x11, zmm, 0, base, disp, 64, 0)
#define VBROADCASTSS(c, zmm, base, disp) evex_mem(c, 1, 2, 0x18, zmm, 0, base, disp, 4, 0)
#define VFMADD231PS_B(c, acc, x, base, disp) evex_mem(c, 1, 2, 0xB8, acc, x, base, disp, 4, 1)
#define VPDPBUSD_B(c, acc, x, base, disp) evex_mem(c, 1, 2, 0x50, acc, x, base, disp, 4, 1)
#define VPXORD(c, dst) evex_rrr(c, 1, 1, 0xEF, dst, dst, dst)

/* A pointer register whose displacements must stay in disp8*N range: `at` is the byte offset it points to now. */
typedef struct { int gpr; int64_t at; int N; } JitBase;

/* the displacement of byte offset `off` from the base, moving the base forward first when off is out of range */
static int32_t jit_disp(JitCode *c, JitBase *b, int64_t off) {
    int64_t d = off - b->at;
    if (d < -128 * b->N || d > 127 * b->N) {
        const int64_t to = off + 128 * b->N;  /* off becomes the lowest reachable offset */
        add_imm32(c, b->gpr, (int32_t)(to - b->at));
        b->at = to;
        d = off - to;
    }
    return (int32_t)d;
}

typedef struct {
    int kind, at, rows, in_features, nblocks;
    uint8_t *code;          /* the mapping (read + execute once built) */
    size_t code_bytes, code_used;
    size_t *entry;          /* per block: offset of its code */
    int32_t *stream;        /* weights (fp32 bits or packed int8x4) in emission order, per block from stream_at */
    size_t *stream_at;
    size_t stream_len;
    float *scale, *offset;  /* int8: per output row */
} JitLinear;

typedef void (*jit_fn)(const void *X, const void *W, void *out);

static void jit_free(JitLinear *j) {
    if (!j) return;
#if ZOO_JIT
    if (j->code) munmap(j->code, j->code_bytes);
#endif
    free(j->entry); free(j->stream); free(j->stream_at); free(j->scale); free(j->offset);
    free(j);
}

/* Emit (c->p set) or measure (c->p NULL) every block; fills the weight stream when `stream` is non-NULL. Each block's
 * entries are bucketed by feature first (a counting sort, rows ascending within a feature), so emission is linear in
 * the non-zeros. Returns -1 when the scratch of the buckets cannot be had. */
static int jit_emit(JitLinear *j, const int64_t *indptr, const int32_t *cols, const int32_t *vals, const float *bias,
                    JitCode *c, int32_t *stream, size_t *entry, size_t *stream_at, size_t *stream_len) {
    const int f32 = j->kind == JIT_F32;
    const int xregs = 32 - j->at;
    const int64_t width = f32 ? j->in_features : j->in_features / 4;  /* features (fp32) or groups (int8) */
    int64_t most = 0;
    for (int blk = 0; blk < j->nblocks; blk++) {
        const int r0 = blk * j->at, r1 = j->rows - r0 < j->at ? j->rows : r0 + j->at;
        most = indptr[r1] - indptr[r0] > most ? indptr[r1] - indptr[r0] : most;
    }
    int64_t *start = (int64_t *)calloc((size_t)width + 1, sizeof(int64_t));
    uint8_t *row_of = (uint8_t *)malloc((size_t)most + 1);
    if (!start || !row_of) { free(start); free(row_of); return -1; }
    size_t pos = 0;
    for (int blk = 0; blk < j->nblocks; blk++) {
        const int r0 = blk * j->at, nr = j->rows - r0 < j->at ? j->rows - r0 : j->at;
        int64_t p[JIT_MAX_AT];
        for (int i = 0; i < nr; i++) p[i] = indptr[r0 + i];
        if (entry) entry[blk] = c->n;
        if (stream_at) stream_at[blk] = pos;
        const size_t start_pos = pos;
        JitBase w = {RSI, 0, 4}, x = {RDI, 0, 64};
        for (int i = 0; i < nr; i++) {
            if (f32) {
                if (stream) memcpy(&stream[pos], &bias[r0 + i], 4);
                VBROADCASTSS(c, i, RSI, jit_disp(c, &w, (int64_t)(pos - start_pos) * 4));
                pos++;
            } else {
                VPXORD(c, i);
            }
        }
        /* bucket the block's entries by feature: start[k] .. start[k + 1] hold the rows using feature k, ascending */
        memset(start, 0, sizeof(int64_t) * ((size_t)width + 1));
        for (int i = 0; i < nr; i++)
            for (int64_t e = indptr[r0 + i]; e < indptr[r0 + i + 1]; e++) start[cols[e] + 1]++;
        for (int64_t k = 0; k < width; k++) start[k + 1] += start[k];
        for (int i = 0; i < nr; i++)
            for (int64_t e = indptr[r0 + i]; e < indptr[r0 + i + 1]; e++) row_of[start[cols[e]]++] = (uint8_t)i;
        /* start[k] now ends bucket k; bucket k begins where bucket k - 1 ended */
        int xr = 0;
        for (int64_t k = 0, b0 = 0; k < width; b0 = start[k], k++) {
            if (start[k] == b0) continue;
            const int xz = j->at + xr;
            xr = (xr + 1) % xregs;
            VMOVUPS_LOAD(c, xz, RDI, jit_disp(c, &x, k * 64));
            for (int64_t b = b0; b < start[k]; b++) {
                const int i = row_of[b];
                if (stream) stream[pos] = vals[p[i]];
                const int32_t d = jit_disp(c, &w, (int64_t)(pos - start_pos) * 4);
                if (f32) VFMADD231PS_B(c, i, xz, RSI, d);
                else VPDPBUSD_B(c, i, xz, RSI, d);
                pos++;
                p[i]++;
            }
        }
        for (int i = 0; i < nr; i++) VMOVUPS_STORE(c, i, RDX, i * 64);
        static const uint8_t tail[4] = {0xC5, 0xF8, 0x77, 0xC3};  /* vzeroupper; ret */
        jit_put(c, tail, 4);
    }
    *stream_len = pos;
    free(start);
    free(row_of);
    return 0;
}

/* The checks that make a packing safe to emit: row pointers from 0 to nnz, non-decreasing; every column inside
 * [0, width) and strictly ascending within its row. Returns an error message or NULL. */
static const char *jit_check(const int64_t *indptr, int64_t rows, const int32_t *cols, int64_t nnz, int64_t width) {
    if (indptr[0] != 0 || indptr[rows] != nnz) return "row pointers do not span the stored entries";
    for (int64_t r = 0; r < rows; r++) {
        if (indptr[r + 1] < indptr[r]) return "row pointers decrease";
        for (int64_t e = indptr[r]; e < indptr[r + 1]; e++) {
            if (cols[e] < 0 || cols[e] >= width) return "a column index lies outside the input";
            if (e > indptr[r] && cols[e] <= cols[e - 1]) return "column indices are not strictly ascending within a row";
        }
    }
    return NULL;
}

static void jit_capsule_free(PyObject *cap) { jit_free((JitLinear *)PyCapsule_GetPointer(cap, "zoo.jit")); }

/* jit_build(kind, rows, in_features, at, indptr, n_indptr, cols, vals, nnz, bias, scale, offset) -> capsule
 * kind 0: fp32 CSR (vals float32, bias float32[rows]); kind 1: int8 block-4 (cols = group indices, vals = 4 int8
 * packed in an int32, scale/offset float32[rows]). n_indptr and nnz are the lengths of the arrays behind the
 * pointers, checked against rows and indptr. */
static PyObject *py_jit_build(PyObject *self, PyObject *args) {
    int kind, at;
    Py_ssize_t rows, in_f, indptr, n_indptr, cols, vals, nnz, bias, scale, offset;
    if (!PyArg_ParseTuple(args, "inninnnnnnnn", &kind, &rows, &in_f, &at, &indptr, &n_indptr, &cols, &vals, &nnz, &bias, &scale,
                          &offset))
        return NULL;
#if !ZOO_JIT
    PyErr_SetString(PyExc_OSError, "machine-code kernels need x86-64 Linux");
    return NULL;
#else
    if (jit_off) {
        PyErr_SetString(PyExc_OSError, "ZOO_NO_JIT is set");
        return NULL;
    }
    if (!has_avx512 || (kind == JIT_I8 && !has_vnni)) {
        PyErr_SetString(PyExc_OSError, kind == JIT_I8 ? "this CPU has no AVX-512 VNNI" : "this CPU has no AVX-512");
        return NULL;
    }
    if ((kind != JIT_F32 && kind != JIT_I8) || at < 1 || at > JIT_MAX_AT || rows < 1 || in_f < 1 || in_f > (1 << 24) ||
        (kind == JIT_I8 && in_f % 4) || n_indptr != rows + 1 || nnz < 0 || nnz > ((Py_ssize_t)1 << 31)) {
        PyErr_SetString(PyExc_ValueError, "jit_build: shape or kind out of range");
        return NULL;
    }
    const int64_t *ip = PTR(const int64_t *, indptr);
    const int32_t *cp = PTR(const int32_t *, cols), *vp = PTR(const int32_t *, vals);
    const char *bad = jit_check(ip, rows, cp, nnz, kind == JIT_F32 ? in_f : in_f / 4);
    if (bad) {
        PyErr_Format(PyExc_ValueError, "refusing a packed pattern: %s", bad);
        return NULL;
    }
    JitLinear *j = (JitLinear *)calloc(1, sizeof(JitLinear));
    if (!j) return PyErr_NoMemory();
    j->kind = kind; j->at = at; j->rows = (int)rows; j->in_features = (int)in_f; j->nblocks = (int)((rows + at - 1) / at);
    const float *bp = PTR(const float *, bias);
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    JitCode count = {NULL, 0, 0, 0};
    size_t slen = 0;
    if (jit_emit(j, ip, cp, vp, bp, &count, NULL, NULL, NULL, &slen)) err = ENOMEM;
    const size_t page = 4096, bytes = (count.n + page - 1) / page * page;
    j->entry = (size_t *)malloc(sizeof(size_t) * j->nblocks);
    j->stream_at = (size_t *)malloc(sizeof(size_t) * j->nblocks);
    j->stream = (int32_t *)malloc(sizeof(int32_t) * (slen + 16));  /* + 16: broadcasts never read past the end */
    if (kind == JIT_I8) {
        j->scale = (float *)malloc(sizeof(float) * rows);
        j->offset = (float *)malloc(sizeof(float) * rows);
    }
    if (err || !j->entry || !j->stream_at || !j->stream || (kind == JIT_I8 && (!j->scale || !j->offset))) {
        err = ENOMEM;
    } else {
        void *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) {
            err = errno;
        } else {
            j->code = (uint8_t *)mem; j->code_bytes = bytes;
            JitCode out = {j->code, 0, count.n, 0};
            size_t slen2 = 0;
            if (jit_emit(j, ip, cp, vp, bp, &out, j->stream, j->entry, j->stream_at, &slen2)) err = ENOMEM;
            memset(j->stream + slen, 0, sizeof(int32_t) * 16);
            j->code_used = out.n;
            if (!err && (out.overflow || out.n != count.n || slen2 != slen)) err = -1;
            if (!err && mprotect(mem, bytes, PROT_READ | PROT_EXEC) != 0) err = errno;
            j->stream_len = slen;
            if (kind == JIT_I8) {
                memcpy(j->scale, PTR(const float *, scale), sizeof(float) * rows);
                memcpy(j->offset, PTR(const float *, offset), sizeof(float) * rows);
            }
        }
    }
    Py_END_ALLOW_THREADS
    if (err) {
        jit_free(j);
        if (err == ENOMEM) return PyErr_NoMemory();
        if (err == -1) { PyErr_SetString(PyExc_RuntimeError, "jit_build: emitted code differs from its measured size"); return NULL; }
        errno = err;
        return PyErr_Format(PyExc_OSError, "executable memory refused: %s", strerror(err));
    }
    PyObject *cap = PyCapsule_New(j, "zoo.jit", jit_capsule_free);
    if (!cap) jit_free(j);
    return cap;
#endif
}

#if ZOO_JIT
/* fp32 [F][T] -> panels [P][F][16], tokens past T zero */
__attribute__((target("avx512f")))
static void jit_panel_f32(const float *X, float *Xp, int64_t F, int64_t T, int64_t f) {
    for (int64_t p = 0; p * JIT_PANEL < T; p++) {
        const __mmask16 m = tail_mask(T - p * JIT_PANEL);
        _mm512_storeu_ps(Xp + (p * F + f) * JIT_PANEL, _mm512_maskz_loadu_ps(m, X + f * T + p * JIT_PANEL));
    }
}

/* fp32 [F][T] -> uint8 panels [P][F/4][16][4] for group g, quantized as quant_group_avx512 does */
__attribute__((target("avx512f")))
static void jit_panel_i8(const float *X, uint8_t *X8p, int64_t F, int64_t T, int64_t g, float s, float zp) {
    const __m512 vs = _mm512_set1_ps(s), vz = _mm512_set1_ps(zp);
    const float *x = X + 4 * g * T;
    for (int64_t p = 0; p * JIT_PANEL < T; p++) {
        const int64_t t = p * JIT_PANEL;
        _mm512_storeu_si512((void *)(X8p + (p * (F / 4) + g) * 64), quant4x16(x + t, T, tail_mask(T - t), vs, vz));
    }
}

__attribute__((target("avx512f")))
static void jit_epilogue_f32(const float *acc, int nr, float *y, int64_t T, int64_t t0, int act) {
    const __mmask16 m = tail_mask(T - t0);
    for (int i = 0; i < nr; i++) _mm512_mask_storeu_ps(y + i * T + t0, m, act16(_mm512_loadu_ps(acc + i * JIT_PANEL), act));
}

__attribute__((target("avx512f")))
static void jit_epilogue_i8(const int32_t *acc, int nr, const float *scale, const float *offset, float *y, int64_t T, int64_t t0, int act) {
    const __mmask16 m = tail_mask(T - t0);
    for (int i = 0; i < nr; i++) {
        const __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512((const void *)(acc + i * JIT_PANEL))),
                                         _mm512_set1_ps(scale[i]), _mm512_set1_ps(offset[i]));
        _mm512_mask_storeu_ps(y + i * T + t0, m, act16(v, act));
    }
}
#endif

/* jit_code(capsule) -> (code bytes, weights in the stream): for disassembly checks and sizes */
static PyObject *py_jit_code(PyObject *self, PyObject *args) {
    PyObject *cap;
    if (!PyArg_ParseTuple(args, "O", &cap)) return NULL;
    JitLinear *j = (JitLinear *)PyCapsule_GetPointer(cap, "zoo.jit");
    if (!j) return NULL;
    return Py_BuildValue("(y#n)", (const char *)j->code, (Py_ssize_t)j->code_used, (Py_ssize_t)j->stream_len);
}
