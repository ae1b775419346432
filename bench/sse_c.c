/*
 * SSE benchmark, implementation (1): the C parser alone.
 *
 *   sse_c FILE [RUNS]
 *
 * Reads FILE into memory, then RUNS times (default 9): a fresh parser fed
 * 16 KiB chunks, the sink counting events and touching each one (sums the
 * lengths and the first and last data byte).  Prints the best run as one
 * RESULT line, then the same through the event queue (evq_sink, drained
 * after every chunk as the Lua binding does) as a second line.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "evq.h"
#include "sse.h"

#define CHUNK (16u * 1024u)

typedef struct {
    uint64_t events;
    uint64_t data_bytes;
    uint64_t touch;
} tally;

static void count(tally *t, const sse_event *ev) {
    t->events++;
    t->data_bytes += ev->data_len;
    t->touch += ev->type_len + ev->id_len;
    if (ev->data_len)
        t->touch += (unsigned char)ev->data[0] + (unsigned char)ev->data[ev->data_len - 1];
}

static int direct_sink(void *ud, const sse_event *ev) {
    count((tally *)ud, ev);
    return 0;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int run(const char *buf, size_t len, int via_queue, tally *t, double *secs) {
    sse_parser p;
    evq q;
    size_t off;
    int pending = 0;
    double t0;
    memset(t, 0, sizeof *t);
    sse_init(&p, 0, 0);
    evq_init(&q);
    t0 = now();
    for (off = 0; off < len; off += CHUNK) {
        size_t n = len - off < CHUNK ? len - off : CHUNK;
        sse_status st;
        if (via_queue) {
            sse_event ev;
            st = sse_feed(&p, buf + off, n, evq_sink, &q);
            while (evq_peek(&q, &ev)) {
                count(t, &ev);
                evq_pop(&q);
            }
        } else {
            st = sse_feed(&p, buf + off, n, direct_sink, t);
        }
        if (st != SSE_OK) {
            fprintf(stderr, "sse_feed: %s\n", sse_strerror(st));
            return -1;
        }
    }
    sse_finish(&p, &pending);
    *secs = now() - t0;
    sse_free(&p);
    evq_free(&q);
    return pending ? -1 : 0;
}

int main(int argc, char **argv) {
    FILE *f;
    char *buf;
    long size;
    int runs = argc > 2 ? atoi(argv[2]) : 9;
    int via_queue;

    if (argc < 2 || runs < 1) {
        fprintf(stderr, "usage: sse_c FILE [RUNS]\n");
        return 2;
    }
    f = fopen(argv[1], "rb");
    if (!f || fseek(f, 0, SEEK_END) || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
        perror(argv[1]);
        return 1;
    }
    buf = malloc((size_t)size + 1);
    if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) {
        perror(argv[1]);
        return 1;
    }
    fclose(f);

    for (via_queue = 0; via_queue <= 1; via_queue++) {
        double best = 1e30;
        tally t = {0, 0, 0};
        int i;
        for (i = 0; i < runs; i++) {
            double secs;
            if (run(buf, (size_t)size, via_queue, &t, &secs)) return 1;
            if (secs < best) best = secs;
        }
        printf("RESULT impl=%s bytes=%ld events=%llu data_bytes=%llu secs=%.6f touch=%llu\n",
               via_queue ? "c_evq" : "c", size, (unsigned long long)t.events,
               (unsigned long long)t.data_bytes, best, (unsigned long long)t.touch);
    }
    free(buf);
    return 0;
}
