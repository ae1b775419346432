/*
 * Recording what an SSE parser delivers, for comparing runs: shared by the
 * C unit tests (tests/c/test_sse.c) and the fuzzer (fuzz/fuzz_sse.c).
 * Every string is copied, since sse_event views die with the callback.
 */
#ifndef BEEOS_SSE_RECORD_H
#define BEEOS_SSE_RECORD_H

#include <stdlib.h>
#include <string.h>

#include "sse.h"

typedef struct {
    sse_kind kind;
    char *type, *data, *id;
    size_t type_len, data_len, id_len;
} rec_ev;

static char *dupmem(const char *s, size_t n) {
    char *d = malloc(n ? n : 1);
    if (!d) abort();
    if (n) memcpy(d, s, n);
    return d;
}

/* Appends a copy of one event to the growable array *v of *n (room *cap). */
static void rec_append(rec_ev **v, size_t *n, size_t *cap, sse_kind kind, const char *type,
                       size_t type_len, const char *data, size_t data_len, const char *id,
                       size_t id_len) {
    rec_ev *e;
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 16;
        rec_ev *p = realloc(*v, c * sizeof *p);
        if (!p) abort();
        *v = p;
        *cap = c;
    }
    e = &(*v)[(*n)++];
    e->kind = kind;
    e->type = dupmem(type, type_len);
    e->type_len = type_len;
    e->data = dupmem(data, data_len);
    e->data_len = data_len;
    e->id = dupmem(id, id_len);
    e->id_len = id_len;
}

/* Frees the n recorded events and the array. */
static void rec_release(rec_ev *v, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        free(v[i].type);
        free(v[i].data);
        free(v[i].id);
    }
    free(v);
}

#endif
