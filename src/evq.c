#include "evq.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    size_t kind, type_len, data_len, id_len;
} evq_header;

void evq_init(evq *q) { memset(q, 0, sizeof *q); }

void evq_free(evq *q) {
    free(q->buf);
    memset(q, 0, sizeof *q);
}

static int evq_reserve(evq *q, size_t need) {
    size_t cap;
    char *p;
    if (q->cap - q->tail >= need) return 0;
    /* Slide the live records to the front before growing: a queue that is
     * drained as fast as it fills never grows past one burst. */
    if (q->head > 0) {
        memmove(q->buf, q->buf + q->head, q->tail - q->head);
        q->tail -= q->head;
        q->head = 0;
        if (q->cap - q->tail >= need) return 0;
    }
    cap = q->cap ? q->cap : 4096;
    while (cap - q->tail < need) {
        if (cap > ((size_t)-1) / 2) return -1;
        cap *= 2;
    }
    p = realloc(q->buf, cap);
    if (!p) return -1;
    q->buf = p;
    q->cap = cap;
    return 0;
}

int evq_push(evq *q, const sse_event *ev) {
    evq_header h;
    size_t total = sizeof h + ev->type_len + ev->data_len + ev->id_len;
    char *w;
    if (total < sizeof h) return -1;
    if (evq_reserve(q, total)) return -1;
    h.kind = (size_t)ev->kind;
    h.type_len = ev->type_len;
    h.data_len = ev->data_len;
    h.id_len = ev->id_len;
    w = q->buf + q->tail;
    memcpy(w, &h, sizeof h);
    w += sizeof h;
    memcpy(w, ev->type, ev->type_len);
    w += ev->type_len;
    memcpy(w, ev->data, ev->data_len);
    w += ev->data_len;
    memcpy(w, ev->id, ev->id_len);
    q->tail += total;
    q->count++;
    return 0;
}

int evq_peek(const evq *q, sse_event *ev) {
    evq_header h;
    const char *r;
    if (q->count == 0) return 0;
    r = q->buf + q->head;
    memcpy(&h, r, sizeof h);
    r += sizeof h;
    ev->kind = (sse_kind)h.kind;
    ev->type = r;
    ev->type_len = h.type_len;
    r += h.type_len;
    ev->data = r;
    ev->data_len = h.data_len;
    r += h.data_len;
    ev->id = r;
    ev->id_len = h.id_len;
    return 1;
}

void evq_pop(evq *q) {
    evq_header h;
    if (q->count == 0) return;
    memcpy(&h, q->buf + q->head, sizeof h);
    q->head += sizeof h + h.type_len + h.data_len + h.id_len;
    if (--q->count == 0) q->head = q->tail = 0;
}

size_t evq_bytes(const evq *q) { return q->tail - q->head; }

int evq_sink(void *ud, const sse_event *ev) { return evq_push((evq *)ud, ev); }
