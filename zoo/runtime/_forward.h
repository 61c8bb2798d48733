/* One native call per inference (included by _kernels.c): embeddings to the last layer's hidden state in one
 * OpenMP region, the layers' steps separated by a barrier of our own.
 *
 * plan_new builds a plan once, at compile time, from the packed Linears (their arrays stay owned by the Python
 * engine, which keeps the plan beside them); forward runs it. Inside the region every step splits its work the way
 * the per-kernel entry points do (rows in dynamic chunks, token panels, (sequence, head) tasks), and every output
 * element is computed by one thread in a fixed order, so a forward gives the bits the step-by-step Python path gives,
 * whoever runs what. Dynamic work is claimed from per-step atomic counters.
 *
 * The barrier spins for at most BARRIER_SPIN_NS, then sleeps on a futex: a busy CPU (another process on one of the
 * cores) never leaves a thread spinning for a preempted partner, and an idle one pays ~0.3 us per barrier instead of
 * the futex wake-ups libgomp's passive policy costs at every region and barrier (13-28 us each). */
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <time.h>
#include <limits.h>
#define ZOO_FUTEX 1
#else
#define ZOO_FUTEX 0
#endif
#include <stdatomic.h>

#define BARRIER_SPIN_NS 30000

typedef struct {
    _Alignas(64) atomic_int count;
    _Alignas(64) atomic_int gen;
    atomic_int sleepers;
} Barrier;

static inline void cpu_relax(void) {
#if ZOO_X86
    _mm_pause();
#endif
}

static inline uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* every one of the team's n threads calls it; returns once all have */
static void barrier_wait(Barrier *b, int n) {
    if (n <= 1) return;
    const int g = atomic_load(&b->gen);
    if (atomic_fetch_add(&b->count, 1) == n - 1) {
        atomic_store(&b->count, 0);
        atomic_fetch_add(&b->gen, 1);
#if ZOO_FUTEX
        if (atomic_load(&b->sleepers)) syscall(SYS_futex, (int *)&b->gen, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#endif
        return;
    }
    const uint64_t until = mono_ns() + BARRIER_SPIN_NS;
    for (int i = 1;; i++) {
        if (atomic_load_explicit(&b->gen, memory_order_acquire) != g) return;
        cpu_relax();
        if ((i & 63) == 0 && mono_ns() > until) break;
    }
    atomic_fetch_add(&b->sleepers, 1);
    while (atomic_load(&b->gen) == g) {
#if ZOO_FUTEX
        syscall(SYS_futex, (int *)&b->gen, FUTEX_WAIT_PRIVATE, g, NULL, NULL, 0);
#else
        sched_yield();
#endif
    }
    atomic_fetch_sub(&b->sleepers, 1);
}

enum { LK_CSR = 0, LK_B4 = 1, LK_CHUNKED = 2, LK_I8 = 3, LK_JIT = 4 };
#define MAX_CHUNKS 16

typedef struct {
    int kind, nchunks;
    int64_t rows, in_f;
    const int64_t *indptr[MAX_CHUNKS];
    const int32_t *cols[MAX_CHUNKS];
    const void *vals[MAX_CHUNKS];  /* fp32 values or packed int8 blocks */
    const float *bias, *scale, *offset;
    float qs, qz;                  /* int8 kinds: the input's quantization */
    JitLinear *jit;
} LinOp;

typedef struct { const float *gamma, *beta; float eps; } NormOp;

typedef struct {
    LinOp qkv, attn_out, ffn_in, ffn_out;
    LinOp alt[4];          /* per role (qkv, attn_out, ffn_in, ffn_out): the packing for long inputs, when another */
    int64_t alt_from[4];   /* from this many tokens on (0: none) */
    NormOp ln_attn, ln_out;
    const float *qp;
} LayerOp;

/* the packing of role k that runs T tokens */
static inline const LinOp *pick(const LayerOp *L, int k, int64_t T) {
    const LinOp *base[4] = {&L->qkv, &L->attn_out, &L->ffn_in, &L->ffn_out};
    return L->alt_from[k] > 0 && T >= L->alt_from[k] ? &L->alt[k] : base[k];
}

typedef struct {
    int nlayers;
    int64_t hidden, heads, inter;
    const float *word, *pos, *type;
    NormOp ln_embed;
    LayerOp *layers;
    PyObject *keep;  /* the Python objects the plan points into (jit capsules) */
} Plan;

typedef struct {  /* one per thread, all pointing to the same barrier and counters */
    Barrier *bar;
    atomic_long *counters;  /* one per step, each on its own cache line (stride 8) */
    int nt;
    int64_t *stamps, nstamps, at;  /* thread 0 only, when profiling: the time each barrier was passed */
} Team;

static void team_sync(Team *tm) {
    barrier_wait(tm->bar, tm->nt);
    if (tm->stamps && tm->at < tm->nstamps) tm->stamps[tm->at++] = (int64_t)mono_ns();
}

/* the next item of a dynamic step; every thread walks the steps in the same order, so `step` agrees */
static inline int64_t claim(Team *tm, int step, int64_t chunk) { return atomic_fetch_add(&tm->counters[step * 8], chunk); }

static void plan_free(Plan *p) {
    if (!p) return;
    Py_XDECREF(p->keep);
    free(p->layers);
    free(p);
}

static void plan_capsule_free(PyObject *cap) { plan_free((Plan *)PyCapsule_GetPointer(cap, "zoo.plan")); }

/* (kind, nchunks, rows, in_f, indptr, cols, vals, bias, scale, offset, qs, qz, jit capsule or None); for LK_CHUNKED
 * indptr/cols/vals are addresses of int64 arrays of nchunks addresses */
static int parse_linear(PyObject *t, LinOp *op) {
    Py_ssize_t rows, in_f, indptr, cols, vals, bias, scale, offset;
    PyObject *cap;
    memset(op, 0, sizeof(*op));
    if (!PyArg_ParseTuple(t, "iinnnnnnnnffO", &op->kind, &op->nchunks, &rows, &in_f, &indptr, &cols, &vals, &bias, &scale, &offset,
                          &op->qs, &op->qz, &cap))
        return -1;
    if (op->kind < LK_CSR || op->kind > LK_JIT || rows < 1 || in_f < 1 || op->nchunks < 1 || op->nchunks > MAX_CHUNKS) {
        PyErr_SetString(PyExc_ValueError, "plan: a Linear's kind or shape is out of range");
        return -1;
    }
    op->rows = rows; op->in_f = in_f;
    op->bias = PTR(const float *, bias); op->scale = PTR(const float *, scale); op->offset = PTR(const float *, offset);
    if (op->kind == LK_CHUNKED) {
        for (int j = 0; j < op->nchunks; j++) {
            op->indptr[j] = PTR(const int64_t *, PTR(const int64_t *, indptr)[j]);
            op->cols[j] = PTR(const int32_t *, PTR(const int64_t *, cols)[j]);
            op->vals[j] = PTR(const void *, PTR(const int64_t *, vals)[j]);
        }
    } else {
        op->nchunks = 1;
        op->indptr[0] = PTR(const int64_t *, indptr); op->cols[0] = PTR(const int32_t *, cols); op->vals[0] = PTR(const void *, vals);
    }
    if (op->kind == LK_JIT) {
        op->jit = (JitLinear *)PyCapsule_GetPointer(cap, "zoo.jit");
        if (!op->jit) return -1;
        if (op->jit->rows != rows || op->jit->in_features != in_f) {
            PyErr_SetString(PyExc_ValueError, "plan: emitted code of another shape");
            return -1;
        }
        if (op->jit->kind == JIT_I8 && !(op->qs > 0.0f)) {
            PyErr_SetString(PyExc_ValueError, "plan: an int8 Linear needs its input's scale");
            return -1;
        }
    }
    if (op->kind == LK_I8 && (!(op->qs > 0.0f) || in_f % 4)) {
        PyErr_SetString(PyExc_ValueError, "plan: an int8 Linear needs its input's scale and whole groups of 4");
        return -1;
    }
    return 0;
}

/* plan_new(layers, word, pos, type, ln_gamma, ln_beta, ln_eps, hidden, heads, inter, keep) -> capsule; layers: a list of
 * (qkv, attn_out, ffn_in, ffn_out, ln1_gamma, ln1_beta, ln1_eps, ln2_gamma, ln2_beta, ln2_eps, qparams, longs), longs: 4 of
 * None or (linear, from_tokens), the packing a role takes for long inputs */
static PyObject *py_plan_new(PyObject *self, PyObject *args) {
    PyObject *layers, *keep;
    Py_ssize_t word, pos, type, g, b, hidden, heads, inter;
    float eps;
    if (!PyArg_ParseTuple(args, "O!nnnnnfnnnO", &PyList_Type, &layers, &word, &pos, &type, &g, &b, &eps, &hidden, &heads, &inter, &keep))
        return NULL;
    if (hidden < 1 || heads < 1 || hidden % heads || inter < 1) {
        PyErr_SetString(PyExc_ValueError, "plan: hidden size, heads or intermediate size out of range");
        return NULL;
    }
    Plan *p = (Plan *)calloc(1, sizeof(Plan));
    if (!p) return PyErr_NoMemory();
    p->nlayers = (int)PyList_GET_SIZE(layers);
    p->layers = (LayerOp *)calloc((size_t)p->nlayers + 1, sizeof(LayerOp));
    if (!p->layers) { plan_free(p); return PyErr_NoMemory(); }
    p->hidden = hidden; p->heads = heads; p->inter = inter;
    p->word = PTR(const float *, word); p->pos = PTR(const float *, pos); p->type = PTR(const float *, type);
    p->ln_embed = (NormOp){PTR(const float *, g), PTR(const float *, b), eps};
    for (int i = 0; i < p->nlayers; i++) {
        PyObject *qkv, *ao, *fi, *fo, *longs;
        Py_ssize_t g1, b1, g2, b2, qp;
        float e1, e2;
        LayerOp *L = &p->layers[i];
        if (!PyArg_ParseTuple(PyList_GET_ITEM(layers, i), "OOOOnnfnnfnO!", &qkv, &ao, &fi, &fo, &g1, &b1, &e1, &g2, &b2, &e2, &qp,
                              &PyTuple_Type, &longs) ||
            parse_linear(qkv, &L->qkv) || parse_linear(ao, &L->attn_out) || parse_linear(fi, &L->ffn_in) || parse_linear(fo, &L->ffn_out)) {
            plan_free(p);
            return NULL;
        }
        if (PyTuple_GET_SIZE(longs) != 4) {
            PyErr_SetString(PyExc_ValueError, "plan: a layer needs 4 long-input entries");
            plan_free(p);
            return NULL;
        }
        for (int k = 0; k < 4; k++) {
            PyObject *e = PyTuple_GET_ITEM(longs, k), *lt;
            Py_ssize_t from;
            if (e == Py_None) continue;
            if (!PyArg_ParseTuple(e, "On", &lt, &from) || parse_linear(lt, &L->alt[k])) { plan_free(p); return NULL; }
            const LinOp *base = pick(L, k, 0);
            if (from < 1 || L->alt[k].rows != base->rows || L->alt[k].in_f != base->in_f) {
                PyErr_SetString(PyExc_ValueError, "plan: a long-input packing of another shape");
                plan_free(p);
                return NULL;
            }
            L->alt_from[k] = from;
        }
        if (L->qkv.rows != 3 * hidden || L->qkv.in_f != hidden || L->attn_out.rows != hidden || L->attn_out.in_f != hidden ||
            L->ffn_in.rows != inter || L->ffn_in.in_f != hidden || L->ffn_out.rows != hidden || L->ffn_out.in_f != inter) {
            PyErr_SetString(PyExc_ValueError, "plan: a layer's Linears do not chain");
            plan_free(p);
            return NULL;
        }
        L->ln_attn = (NormOp){PTR(const float *, g1), PTR(const float *, b1), e1};
        L->ln_out = (NormOp){PTR(const float *, g2), PTR(const float *, b2), e2};
        L->qp = PTR(const float *, qp);
    }
    Py_INCREF(keep);
    p->keep = keep;
    PyObject *cap = PyCapsule_New(p, "zoo.plan", plan_capsule_free);
    if (!cap) plan_free(p);
    return cap;
}

/* scratch bytes a Linear needs for its input (panels or uint8 VNNI copy) */
static int64_t linear_scratch(const LinOp *L, int64_t T) {
    const int64_t panels = (T + JIT_PANEL - 1) / JIT_PANEL * JIT_PANEL;
    if (L->kind == LK_JIT) return L->jit->kind == JIT_F32 ? panels * L->in_f * 4 : panels * L->in_f;
    if (L->kind == LK_I8) return L->in_f * T;
    return 0;
}

typedef struct {
    float *qkv, *ctx, *y, *hidden;
    uint8_t *lin, *lin2;
    float *attn, *ln;  /* per thread: attention_scratch(S, d) and hidden x LN_PANEL floats */
    atomic_long *counters;
    int64_t bytes;
} Arena;

static int plan_steps(const Plan *p) { return 4 + p->nlayers * (8 + 4 * (MAX_CHUNKS + 2)); }

/* carve `base` (NULL: only measure) into the buffers of one forward over B x S tokens */
static Arena arena_of(const Plan *p, uint8_t *base, int64_t B, int64_t S, int nt) {
    Arena a;
    memset(&a, 0, sizeof(a));
    const int64_t T = B * S, H = p->hidden, d = H / p->heads;
    int64_t lin = 0;
    for (int i = 0; i < p->nlayers; i++) {
        const LayerOp *L = &p->layers[i];
        for (int k = 0; k < 4; k++) {
            const int64_t s = linear_scratch(pick(L, k, T), T);
            lin = s > lin ? s : lin;
        }
    }
    int64_t at = 0;
#define CARVE(field, type, n) do { at = (at + 63) / 64 * 64; a.field = base ? (type)(void *)(base + at) : NULL; at += (int64_t)(n); } while (0)
    CARVE(qkv, float *, 3 * H * T * 4);
    CARVE(ctx, float *, H * T * 4);
    CARVE(y, float *, H * T * 4);
    CARVE(hidden, float *, p->inter * T * 4);
    CARVE(lin, uint8_t *, lin);
    CARVE(lin2, uint8_t *, lin);
    CARVE(attn, float *, (int64_t)nt * attention_scratch(S, d) * 4);
    CARVE(ln, float *, (int64_t)nt * H * LN_PANEL * 4);
    CARVE(counters, atomic_long *, (int64_t)plan_steps(p) * 64);
#undef CARVE
    a.bytes = at + 64;
    return a;
}

/* Where a producer writes its output for the next Linear: as plain [F][T] only (consumer NULL), or, when the consumer
 * runs emitted code, straight into that consumer's input panels (fp32, or quantized to its uint8 input): the
 * consumer then skips its own panel pass and the barrier after it. The values are the ones the panel pass would read
 * back from [F][T], so the bits are the same. */
typedef struct {
    const LinOp *consumer;
    uint8_t *panels;
} Next;

static int fuses(const LinOp *consumer) { return consumer && consumer->kind == LK_JIT; }

/* how a consumer's input panels are quantized: its input scale, or 0 for fp32 panels */
static float panel_scale(const LinOp *c) { return c->jit->kind == JIT_I8 ? c->qs : 0.0f; }

#if ZOO_JIT
/* F rows x 16 tokens (row stride ld, n valid tokens; the rest zero) into one input panel at `dst`: fp32 [F][16], or
 * (qs > 0) uint8 [F/4][16][4] quantized with (qs, qz) */
__attribute__((target("avx512f")))
static void to_panel(int64_t F, float qs, float qz, const float *src, int64_t ld, int64_t n, uint8_t *dst) {
    const __mmask16 m = tail_mask(n);
    if (!(qs > 0.0f)) {
        float *d = (float *)(void *)dst;
        for (int64_t f = 0; f < F; f++) _mm512_storeu_ps(d + f * JIT_PANEL, _mm512_maskz_loadu_ps(m, src + f * ld));
        return;
    }
    const __m512 vs = _mm512_set1_ps(qs), vz = _mm512_set1_ps(qz);
    for (int64_t g = 0; g < F / 4; g++) _mm512_storeu_si512((void *)(dst + g * 64), quant4x16(src + 4 * g * ld, ld, m, vs, vz));
}

/* the epilogue of one emitted block for one panel: GELU etc. as jit_epilogue_*, written as [F][T] rows or, for a fused
 * consumer, into its panel p (rows r0.. of the block are its input features r0..) */
__attribute__((target("avx512f")))
static void jit_epilogue(const JitLinear *j, const int32_t *acc, int r0, int nr, float *Y, int64_t T, int64_t p, int act, const Next *next) {
    if (!next->consumer) {
        if (j->kind == JIT_F32) jit_epilogue_f32((const float *)acc, nr, Y + (int64_t)r0 * T, T, p * JIT_PANEL, act);
        else jit_epilogue_i8(acc, nr, j->scale + r0, j->offset + r0, Y + (int64_t)r0 * T, T, p * JIT_PANEL, act);
        return;
    }
    __attribute__((aligned(64))) float v[JIT_MAX_AT * JIT_PANEL];
    for (int i = 0; i < nr; i++) {
        __m512 x = j->kind == JIT_F32 ? _mm512_loadu_ps((const float *)acc + i * JIT_PANEL)
                                      : _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512((const void *)(acc + i * JIT_PANEL))),
                                                        _mm512_set1_ps(j->scale[r0 + i]), _mm512_set1_ps(j->offset[r0 + i]));
        _mm512_store_ps(v + i * JIT_PANEL, act16(x, act));
    }
    const LinOp *c = next->consumer;
    uint8_t *dst = c->jit->kind == JIT_F32 ? next->panels + (p * c->in_f + r0) * JIT_PANEL * 4 : next->panels + (p * (c->in_f / 4) + r0 / 4) * 64;
    to_panel(nr, panel_scale(c), c->qz, v, JIT_PANEL, JIT_PANEL, dst);
}
#endif

/* Y = L X (+ GELU with act), T tokens; ends with a barrier. The emitted kinds read their input panels from `scratch`,
 * written there first from X unless `ready` (a producer wrote them), and hand their output to `next`. */
static void run_linear(const LinOp *L, const float *X, float *Y, int64_t T, int act, uint8_t *scratch, int ready, const Next *next,
                       Team *tm, int tid, int *step) {
    const int nt = tm->nt;
    if (L->kind == LK_JIT) {
        const JitLinear *j = L->jit;
        const int64_t F = L->in_f, panels = (T + JIT_PANEL - 1) / JIT_PANEL;
#if ZOO_JIT
        if (!ready) {
            if (j->kind == JIT_F32)
                for (int64_t f = tid; f < F; f += nt) jit_panel_f32(X, (float *)(void *)scratch, F, T, f);
            else
                for (int64_t g = tid; g < F / 4; g += nt) jit_panel_i8(X, scratch, F, T, g, L->qs, L->qz);
            team_sync(tm);
        }
        const int s = (*step)++;
        __attribute__((aligned(64))) int32_t acc[JIT_MAX_AT * JIT_PANEL];
        /* a thread claims its next block before running the current one and pulls the next one's code and weights into
         * L2 a slice per panel: straight-line code streamed from L3 on demand (weak instruction prefetch) ran the
         * in-model Linears at half their warm speed */
        for (int64_t blk = claim(tm, s, 1), nxt; blk < j->nblocks; blk = nxt) {
            nxt = claim(tm, s, 1);
            const int r0 = (int)blk * j->at, nr = j->rows - r0 < j->at ? j->rows - r0 : j->at;
            const jit_fn fn = (jit_fn)(void *)(j->code + j->entry[blk]);
            const int32_t *w = j->stream + j->stream_at[blk];
            const uint8_t *nc = NULL, *nw = NULL;
            size_t ncode = 0, nweights = 0;
            if (nxt < j->nblocks) {
                nc = j->code + j->entry[nxt];
                ncode = (nxt + 1 < j->nblocks ? j->entry[nxt + 1] : j->code_used) - j->entry[nxt];
                nw = (const uint8_t *)(j->stream + j->stream_at[nxt]);
                nweights = ((nxt + 1 < j->nblocks ? j->stream_at[nxt + 1] : j->stream_len) - j->stream_at[nxt]) * 4;
            }
            for (int64_t p = 0; p < panels; p++) {
                if (nc) {
                    for (size_t o = ncode * p / panels / 64 * 64; o < ncode * (p + 1) / panels; o += 64) _mm_prefetch((const char *)nc + o, _MM_HINT_T1);
                    for (size_t o = nweights * p / panels / 64 * 64; o < nweights * (p + 1) / panels; o += 64)
                        _mm_prefetch((const char *)nw + o, _MM_HINT_T1);
                }
                fn(j->kind == JIT_F32 ? scratch + p * F * JIT_PANEL * 4 : scratch + p * (F / 4) * 64, w, acc);
                jit_epilogue(j, acc, r0, nr, Y, T, p, act, next);
            }
        }
#else
        (void)j; (void)panels; (void)ready; (void)next;
#endif
        team_sync(tm);
        return;
    }
    const int64_t tiles = (T + TILE - 1) / TILE, chunks = (L->rows + 7) / 8;
    if (L->kind == LK_I8) {
        for (int64_t g = tid; g < L->in_f / 4; g += nt) quant_group(X, scratch, g, T, L->qs, L->qz);
        team_sync(tm);
    }
    for (int c = 0; c < L->nchunks; c++) {
        const int s = (*step)++;
        const int flags = (c ? ACCUMULATE : 0) | (c == L->nchunks - 1 ? act : 0);
        for (int64_t item; (item = claim(tm, s, 1)) < tiles * chunks;) {
            const int64_t t0 = item / chunks * TILE, tw = T - t0 < TILE ? T - t0 : TILE;
            const int64_t r1 = (item % chunks + 1) * 8 < L->rows ? (item % chunks + 1) * 8 : L->rows;
            for (int64_t r = item % chunks * 8; r < r1; r++) {
                if (L->kind == LK_I8)
                    i8_row(L->indptr[0], L->cols[0], (const int32_t *)L->vals[0], L->scale, L->offset, scratch, Y, T, t0, tw, r, 0, flags);
                else
                    f32_row(L->kind == LK_B4 ? 1 : 0, L->indptr[c], L->cols[c], (const float *)L->vals[c], L->bias, X, Y, T, t0, tw, r, flags);
            }
        }
        team_sync(tm);
    }
}

/* O = LayerNorm(X + R) over features, tokens split across threads (and, for a fused consumer, each normalised panel
 * also written as its input panel); ends with a barrier */
static void run_layernorm(const NormOp *n, const float *X, const float *R, float *O, int64_t F, int64_t T, float *P, const Next *next,
                          Team *tm, int tid) {
    const LinOp *c = next->consumer;
#if ZOO_X86
    if (has_avx512 && F % 4 == 0) {
        for (int64_t t = (int64_t)tid * 64; t < T; t += (int64_t)tm->nt * 64) {
            const int64_t len = T - t < 64 ? T - t : 64;
            const float qs = c ? panel_scale(c) : 0.0f;
            layernorm_chunk_avx512(X, R, O, n->gamma, n->beta, n->eps, F, T, t, len, c ? next->panels : NULL, t / JIT_PANEL, qs, c ? c->qz : 0.0f);
        }
        team_sync(tm);
        return;
    }
#endif
    const int64_t panels = T / LN_PANEL, items = panels + (panels * LN_PANEL < T ? 1 : 0);
    for (int64_t k = tid; k < items; k += tm->nt) {
        if (k < panels) layernorm_panel(X, R, O, n->gamma, n->beta, n->eps, F, T, k * LN_PANEL, P);
        else layernorm_tokens(X, R, O, n->gamma, n->beta, n->eps, F, T, panels * LN_PANEL);
#if ZOO_JIT
        if (c) {
            uint8_t *dst = next->panels + k * (c->jit->kind == JIT_F32 ? c->in_f * JIT_PANEL * 4 : c->in_f * JIT_PANEL);
            if (k < panels) to_panel(c->in_f, panel_scale(c), c->qz, P, LN_PANEL, LN_PANEL, dst);
            else to_panel(c->in_f, panel_scale(c), c->qz, O + k * LN_PANEL, T, T - k * LN_PANEL, dst);
        }
#endif
    }
    team_sync(tm);
}

/* plan_arena(plan, B, S, threads) -> bytes of scratch a forward needs */
static PyObject *py_plan_arena(PyObject *self, PyObject *args) {
    PyObject *cap;
    Py_ssize_t B, S;
    int threads;
    if (!PyArg_ParseTuple(args, "Onni", &cap, &B, &S, &threads)) return NULL;
    Plan *p = (Plan *)PyCapsule_GetPointer(cap, "zoo.plan");
    if (!p) return NULL;
    if (B < 1 || S < 1 || threads < 1) { PyErr_SetString(PyExc_ValueError, "plan_arena: empty batch or no threads"); return NULL; }
    return PyLong_FromLongLong((long long)arena_of(p, NULL, B, S, threads).bytes);
}

/* forward(plan, ids, types, mask_add, keys, B, S, X, arena, arena_bytes, threads[, stamps, nstamps]): X [hidden][B*S]
 * receives the last layer's output. ids/types int64 [B][S] (bounds-checked by the caller), mask_add float [B][S], keys
 * int64 [B]. stamps: int64 [nstamps] receives the monotonic time (ns) of the start and of every barrier, in order
 * (a profile of the steps; bench/profile.py names them). */
static PyObject *py_forward(PyObject *self, PyObject *args) {
    PyObject *cap;
    Py_ssize_t ids, types, mask, keys, B, S, X, arena, arena_bytes, stamps = 0, nstamps = 0;
    int threads;
    if (!PyArg_ParseTuple(args, "Onnnnnnnnni|nn", &cap, &ids, &types, &mask, &keys, &B, &S, &X, &arena, &arena_bytes, &threads, &stamps,
                          &nstamps))
        return NULL;
    Plan *p = (Plan *)PyCapsule_GetPointer(cap, "zoo.plan");
    if (!p) return NULL;
    if (B < 1 || S < 1 || threads < 1) { PyErr_SetString(PyExc_ValueError, "forward: empty batch or no threads"); return NULL; }
    const Arena a = arena_of(p, PTR(uint8_t *, arena), B, S, threads);
    if (a.bytes > arena_bytes) { PyErr_SetString(PyExc_ValueError, "forward: scratch arena too small"); return NULL; }
    const int64_t T = B * S, H = p->hidden, d = H / p->heads;
    const float scale = (float)(1.0 / (double)sqrtf((float)d));  /* as the Python path computes it */
    float *x = PTR(float *, X);
    Py_BEGIN_ALLOW_THREADS
    for (int i = 0; i < plan_steps(p); i++) atomic_init(&a.counters[i * 8], 0);
    Barrier bar;
    atomic_init(&bar.count, 0); atomic_init(&bar.gen, 0); atomic_init(&bar.sleepers, 0);
#pragma omp parallel num_threads(threads)
    {
#ifdef _OPENMP
        const int tid = omp_get_thread_num(), nt = omp_get_num_threads();  /* nt < threads when fewer were granted */
#else
        const int tid = 0, nt = 1;
#endif
        Team tm = {&bar, a.counters, nt, tid == 0 ? PTR(int64_t *, stamps) : NULL, nstamps, 0};
        if (tm.stamps && nstamps > 0) tm.stamps[tm.at++] = (int64_t)mono_ns();
        int step = 0;
        float *P = a.ln + (int64_t)tid * H * LN_PANEL, *abuf = a.attn + (int64_t)tid * attention_scratch(S, d);
        for (int64_t f0 = (int64_t)tid * 16; f0 < H; f0 += (int64_t)nt * 16)
            embed_features(p->word, p->pos, p->type, PTR(const int64_t *, ids), PTR(const int64_t *, types), S, H, T, f0, x);
        team_sync(&tm);
        /* input panels: qkv, attn_out and ffn_in read lin, ffn_out reads lin2 (ffn_in writes it while reading lin) */
        const Next none = {NULL, NULL};
        Next to_qkv = {p->nlayers && fuses(pick(&p->layers[0], 0, T)) ? pick(&p->layers[0], 0, T) : NULL, a.lin};
        run_layernorm(&p->ln_embed, x, NULL, x, H, T, P, &to_qkv, &tm, tid);
        for (int l = 0; l < p->nlayers; l++) {
            const LayerOp *L = &p->layers[l];
            const LinOp *qkv = pick(L, 0, T), *attn_out = pick(L, 1, T), *ffn_in = pick(L, 2, T), *ffn_out = pick(L, 3, T);
            const Next to_ffn_in = {fuses(ffn_in) ? ffn_in : NULL, a.lin};
            /* an int8 consumer's groups of 4 features must not straddle the producer's blocks */
            const int whole = fuses(ffn_in) && fuses(ffn_out) && (ffn_out->jit->kind == JIT_F32 || ffn_in->jit->at % 4 == 0);
            const Next to_ffn_out = {whole ? ffn_out : NULL, a.lin2};
            run_linear(qkv, x, a.qkv, T, 0, a.lin, to_qkv.consumer != NULL, &none, &tm, tid, &step);
            const int s = step++;
            for (int64_t task; (task = claim(&tm, s, 1)) < B * p->heads;)
                attention_task(a.qkv, a.ctx, PTR(const float *, mask), PTR(const int64_t *, keys), S, p->heads, d, T, scale, L->qp, abuf, task);
            team_sync(&tm);
            run_linear(attn_out, a.ctx, a.y, T, 0, a.lin, 0, &none, &tm, tid, &step);
            run_layernorm(&L->ln_attn, a.y, x, x, H, T, P, &to_ffn_in, &tm, tid);
            run_linear(ffn_in, x, a.hidden, T, GELU, a.lin, to_ffn_in.consumer != NULL, &to_ffn_out, &tm, tid, &step);
            run_linear(ffn_out, a.hidden, a.y, T, 0, a.lin2, to_ffn_out.consumer != NULL, &none, &tm, tid, &step);
            to_qkv.consumer = l + 1 < p->nlayers && fuses(pick(&p->layers[l + 1], 0, T)) ? pick(&p->layers[l + 1], 0, T) : NULL;
            run_layernorm(&L->ln_out, a.y, x, x, H, T, P, &to_qkv, &tm, tid);
        }
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* jit_run(capsule, X, Y, T, Xp, threads, act[, qscale, qzero]): Y[out][T] = W X + b (fp32) or the int8 product of X
 * quantized with (qscale, qzero), on its own (the forward runs the same steps). Xp: scratch of ceil(T/16) * 16 *
 * in_features floats (fp32) or bytes (int8). */
static PyObject *py_jit_run(PyObject *self, PyObject *args) {
    PyObject *cap;
    Py_ssize_t X, Y, T, Xp;
    int threads, act;
    float qs = 0.0f, qz = 0.0f;
    if (!PyArg_ParseTuple(args, "Onnnnii|ff", &cap, &X, &Y, &T, &Xp, &threads, &act, &qs, &qz)) return NULL;
    JitLinear *j = (JitLinear *)PyCapsule_GetPointer(cap, "zoo.jit");
    if (!j) return NULL;
    if (j->kind == JIT_I8 && !(qs > 0.0f)) {
        PyErr_SetString(PyExc_ValueError, "jit_run: an int8 kernel needs its input's scale");
        return NULL;
    }
    if (T < 1 || threads < 1) { PyErr_SetString(PyExc_ValueError, "jit_run: no tokens or no threads"); return NULL; }
    LinOp op;
    memset(&op, 0, sizeof(op));
    op.kind = LK_JIT; op.nchunks = 1; op.rows = j->rows; op.in_f = j->in_features; op.qs = qs; op.qz = qz; op.jit = j;
    Py_BEGIN_ALLOW_THREADS
    _Alignas(64) atomic_long counter[8];
    atomic_init(&counter[0], 0);
    Barrier bar;
    atomic_init(&bar.count, 0); atomic_init(&bar.gen, 0); atomic_init(&bar.sleepers, 0);
#pragma omp parallel num_threads(threads)
    {
#ifdef _OPENMP
        const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
#else
        const int tid = 0, nt = 1;
#endif
        Team tm = {&bar, counter, nt, NULL, 0, 0};
        int step = 0;
        const Next none = {NULL, NULL};
        run_linear(&op, PTR(const float *, X), PTR(float *, Y), T, act, PTR(uint8_t *, Xp), 0, &none, &tm, tid, &step);
    }
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}
