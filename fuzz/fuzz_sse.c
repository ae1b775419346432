/*
 * libFuzzer harness for the SSE parser (src/sse.c) and event queue
 * (src/evq.c).  Built and run by `make fuzz` (mk/fuzz.mk).
 *
 * It checks invariants, not only the absence of crashes.  For every input:
 *
 *   1. the stream is fed whole (events recorded straight from the sink);
 *   2. the same bytes are fed in chunks whose sizes come from a PRNG seeded
 *      by the input, through the evq (evq_sink, drained after each feed);
 *   3. a small, obviously-correct, non-incremental reference model of the
 *      WHATWG rules (and of this parser's size cap) reads the stream;
 *
 * and all three must agree on every event (kind, type, data, id, in
 * order), the feed status, the last event id, the retry value and, on a
 * clean run, whether finish() reports a discarded incomplete event.  Any
 * difference is printed and aborts (a crash for libFuzzer).
 *
 * Input layout:
 *   byte 0   options: bits 0-2 pick max_event from CAPS (0 = the 8 MiB
 *            default), bit 3 reports comments, bits 4-5 pick how chunk
 *            sizes are drawn (1-4, 0-16 with empty chunks, 1-256, 1)
 *   byte 1   PRNG seed (with the length and byte 0)
 *   rest     the stream
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evq.h"
#include "sse.h"
#include "../tests/c/sse_record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const size_t CAPS[8] = {0, 1, 2, 3, 5, 8, 16, 64};

/* ------------------------------------------------------------------ */
/* What a run produced                                                  */

typedef struct {
    rec_ev *v;
    size_t n, cap;
    sse_status status;
    int pending;
    int has_retry;
    uint64_t retry;
    char *last_id;
    size_t last_id_len;
} result;

static void add_event(result *r, sse_kind kind, const char *type, size_t tl,
                      const char *d, size_t dl, const char *id, size_t il) {
    rec_append(&r->v, &r->n, &r->cap, kind, type, tl, d, dl, id, il);
}

static int rec_sink(void *ud, const sse_event *ev) {
    add_event((result *)ud, ev->kind, ev->type, ev->type_len, ev->data, ev->data_len,
              ev->id, ev->id_len);
    return 0;
}

static void result_free(result *r) {
    rec_release(r->v, r->n);
    free(r->last_id);
    memset(r, 0, sizeof *r);
}

static void finish_run(sse_parser *p, result *r) {
    const char *id;
    sse_status fs = sse_finish(p, &r->pending);
    if (fs != r->status) {
        fprintf(stderr, "finish status %d after feed status %d\n", (int)fs, (int)r->status);
        abort();
    }
    if (sse_feed(p, "data: x\n\n", 9, NULL, NULL) != SSE_ERR_FINISHED) {
        fprintf(stderr, "feed after finish not refused\n");
        abort();
    }
    {
        int again = -1;
        if (sse_finish(p, &again) != fs || again != r->pending) {
            fprintf(stderr, "second finish differs\n");
            abort();
        }
    }
    id = sse_last_event_id(p, &r->last_id_len);
    if (!id) abort();
    r->last_id = dupmem(id, r->last_id_len);
    r->has_retry = sse_retry(p, &r->retry);
}

/* 1: whole. */
static void run_whole(const char *s, size_t n, size_t max_event, int comments, result *r) {
    sse_parser p;
    sse_init(&p, max_event, comments);
    r->status = sse_feed(&p, s, n, rec_sink, r);
    if (r->status != SSE_OK) {
        /* Sticky. */
        size_t before = r->n;
        if (sse_feed(&p, "\n\ndata: x\n\n", 11, rec_sink, r) != r->status || r->n != before) {
            fprintf(stderr, "error not sticky\n");
            abort();
        }
    }
    finish_run(&p, r);
    sse_free(&p);
}

/* 2: chunked, through the queue. */
static uint32_t xorshift(uint32_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

static void drain(evq *q, result *r) {
    sse_event ev;
    while (evq_peek(q, &ev)) {
        add_event(r, ev.kind, ev.type, ev.type_len, ev.data, ev.data_len, ev.id, ev.id_len);
        evq_pop(q);
    }
    if (evq_bytes(q) != 0) abort();
}

static void run_chunked(const char *s, size_t n, size_t max_event, int comments, int mode,
                        uint32_t seed, result *r) {
    sse_parser p;
    evq q;
    size_t at = 0;
    uint32_t x = seed ? seed : 0x9e3779b9u;
    sse_init(&p, max_event, comments);
    evq_init(&q);
    r->status = SSE_OK;
    while (r->status == SSE_OK && at < n) {
        size_t k;
        uint32_t v = xorshift(&x);
        switch (mode) {
        case 0: k = 1 + v % 4; break;
        case 1: k = v % 17; break; /* empty chunks too */
        case 2: k = 1 + v % 256; break;
        default: k = 1; break;
        }
        if (k > n - at) k = n - at;
        r->status = sse_feed(&p, s + at, k, evq_sink, &q);
        at += k;
        /* Drain only now and then, so the queue also holds several. */
        if (v & 0x100) drain(&q, r);
    }
    drain(&q, r);
    finish_run(&p, r);
    sse_free(&p);
    evq_free(&q);
}

/* ------------------------------------------------------------------ */
/* 3: the reference model: whole input, no state carried between calls */

typedef struct {
    size_t max_event;
    int comments;
    char *data, *type, *idbuf; /* each at most the input's length */
    size_t data_len, type_len, idbuf_len;
    char *last_id;
    size_t last_id_len;
    int in_event;
} model;

/* 0, or SSE_ERR_TOO_LARGE. */
static sse_status model_line(model *m, const char *l, size_t n, result *r) {
    const char *value;
    size_t name_len, value_len;
    const char *colon;
    if (n > m->max_event) return SSE_ERR_TOO_LARGE;
    if (n == 0) {
        /* Blank line: dispatch. */
        m->in_event = 0;
        memcpy(m->last_id, m->idbuf, m->idbuf_len);
        m->last_id_len = m->idbuf_len;
        if (m->data_len == 0) {
            m->type_len = 0;
            return SSE_OK;
        }
        m->data_len--; /* the last LF */
        if (m->type_len)
            add_event(r, SSE_KIND_EVENT, m->type, m->type_len, m->data, m->data_len,
                      m->last_id, m->last_id_len);
        else
            add_event(r, SSE_KIND_EVENT, "message", 7, m->data, m->data_len, m->last_id,
                      m->last_id_len);
        m->data_len = 0;
        m->type_len = 0;
        return SSE_OK;
    }
    if (l[0] == ':') {
        if (m->comments) add_event(r, SSE_KIND_COMMENT, "", 0, l + 1, n - 1, "", 0);
        return SSE_OK;
    }
    m->in_event = 1;
    colon = memchr(l, ':', n);
    if (colon) {
        name_len = (size_t)(colon - l);
        value = colon + 1;
        value_len = n - name_len - 1;
        if (value_len > 0 && value[0] == ' ') {
            value++;
            value_len--;
        }
    } else {
        name_len = n;
        value = l + n;
        value_len = 0;
    }
    if (name_len == 4 && memcmp(l, "data", 4) == 0) {
        if (m->data_len + m->type_len + value_len + 1 > m->max_event) return SSE_ERR_TOO_LARGE;
        memcpy(m->data + m->data_len, value, value_len);
        m->data_len += value_len;
        m->data[m->data_len++] = '\n';
    } else if (name_len == 5 && memcmp(l, "event", 5) == 0) {
        if (m->data_len + value_len > m->max_event) return SSE_ERR_TOO_LARGE;
        memcpy(m->type, value, value_len);
        m->type_len = value_len;
    } else if (name_len == 2 && memcmp(l, "id", 2) == 0) {
        if (!memchr(value, '\0', value_len)) {
            memcpy(m->idbuf, value, value_len);
            m->idbuf_len = value_len;
        }
    } else if (name_len == 5 && memcmp(l, "retry", 5) == 0) {
        size_t i;
        int digits = value_len > 0;
        for (i = 0; i < value_len; i++)
            if (value[i] < '0' || value[i] > '9') digits = 0;
        if (digits) {
            /* Base ten, saturating at 2^64 - 1. */
            uint64_t v = 0;
            for (i = 0; i < value_len; i++) {
                uint64_t d = (uint64_t)(value[i] - '0');
                if (v > (UINT64_MAX - d) / 10) {
                    v = UINT64_MAX;
                    break;
                }
                v = v * 10 + d;
            }
            r->has_retry = 1;
            r->retry = v;
        }
    }
    return SSE_OK;
}

static void run_model(const char *s, size_t n, size_t max_event, int comments, result *r) {
    model m;
    size_t i = 0, start;
    memset(&m, 0, sizeof m);
    m.max_event = max_event ? max_event : SSE_DEFAULT_MAX_EVENT;
    m.comments = comments;
    m.data = malloc(n + 1);
    m.type = malloc(n + 1);
    m.idbuf = malloc(n + 1);
    m.last_id = malloc(n + 1);
    if (!m.data || !m.type || !m.idbuf || !m.last_id) abort();
    r->status = SSE_OK;
    if (n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) i = 3;
    start = i;
    while (i < n && r->status == SSE_OK) {
        if (s[i] == '\r' || s[i] == '\n') {
            r->status = model_line(&m, s + start, i - start, r);
            if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') i++;
            start = ++i;
        } else {
            i++;
        }
    }
    if (r->status == SSE_OK) {
        /* The unterminated rest is discarded at the end; the parser holds
         * it meanwhile, so it is capped too.  A stream that is only part
         * of a BOM is still being matched against the BOM, not held. */
        int bom_prefix = n < 3 && n > 0 && memcmp(s, "\xEF\xBB\xBF", n) == 0;
        if (n - start > m.max_event && !bom_prefix) r->status = SSE_ERR_TOO_LARGE;
        r->pending = n > start || m.in_event;
    }
    r->last_id = m.last_id;
    r->last_id_len = m.last_id_len;
    free(m.data);
    free(m.type);
    free(m.idbuf);
}

/* ------------------------------------------------------------------ */

static void dump(const char *what, const char *s, size_t n) {
    size_t i;
    fprintf(stderr, "%s(%zu) \"", what, n);
    for (i = 0; i < n && i < 200; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') fputc(c, stderr);
        else fprintf(stderr, "\\x%02X", c);
    }
    fputs("\"\n", stderr);
}

static void dump_result(const char *name, const result *r) {
    size_t i;
    fprintf(stderr, "%s: status %d pending %d retry %d/%llu, %zu events\n", name,
            (int)r->status, r->pending, r->has_retry, (unsigned long long)r->retry, r->n);
    dump("  last id", r->last_id, r->last_id_len);
    for (i = 0; i < r->n && i < 20; i++) {
        fprintf(stderr, "  [%zu] kind %d\n", i, (int)r->v[i].kind);
        dump("    type", r->v[i].type, r->v[i].type_len);
        dump("    data", r->v[i].data, r->v[i].data_len);
        dump("    id", r->v[i].id, r->v[i].id_len);
    }
}

static int same_mem(const char *a, size_t an, const char *b, size_t bn) {
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

static int same(const result *a, const result *b) {
    size_t i;
    if (a->status != b->status || a->n != b->n) return 0;
    if (a->status == SSE_OK && a->pending != b->pending) return 0;
    if (a->has_retry != b->has_retry || (a->has_retry && a->retry != b->retry)) return 0;
    if (!same_mem(a->last_id, a->last_id_len, b->last_id, b->last_id_len)) return 0;
    for (i = 0; i < a->n; i++) {
        const rec_ev *x = &a->v[i], *y = &b->v[i];
        if (x->kind != y->kind || !same_mem(x->type, x->type_len, y->type, y->type_len) ||
            !same_mem(x->data, x->data_len, y->data, y->data_len) ||
            !same_mem(x->id, x->id_len, y->id, y->id_len))
            return 0;
    }
    return 1;
}

static void require_same(const char *what, const result *a, const result *b, const char *s,
                         size_t n, size_t max_event, int comments, int mode) {
    if (same(a, b)) return;
    fprintf(stderr, "INVARIANT BROKEN: %s (max_event %zu, comments %d, chunk mode %d)\n",
            what, max_event, comments, mode);
    dump("stream", s, n);
    dump_result("whole", a);
    dump_result(what, b);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    result whole, chunked, ref;
    const char *s;
    size_t n, max_event;
    int comments, mode;
    uint32_t seed;
    if (size < 2) return 0;
    max_event = CAPS[data[0] & 7];
    comments = (data[0] >> 3) & 1;
    mode = (data[0] >> 4) & 3;
    seed = ((uint32_t)data[1] * 0x01000193u) ^ ((uint32_t)data[0] << 8) ^ ((uint32_t)size << 16);
    s = (const char *)data + 2;
    n = size - 2;

    memset(&whole, 0, sizeof whole);
    memset(&chunked, 0, sizeof chunked);
    memset(&ref, 0, sizeof ref);
    run_whole(s, n, max_event, comments, &whole);
    run_chunked(s, n, max_event, comments, mode, seed, &chunked);
    run_model(s, n, max_event, comments, &ref);
    require_same("chunked", &whole, &chunked, s, n, max_event, comments, mode);
    require_same("reference model", &whole, &ref, s, n, max_event, comments, mode);
    result_free(&whole);
    result_free(&chunked);
    result_free(&ref);
    return 0;
}
