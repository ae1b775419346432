/*
 * A FIFO of SSE events (and comments) held in one contiguous byte buffer.
 * Pure C.  Filled by the parser's sink (inside libcurl's write callback for
 * network streams) and drained by the Lua binding: the queue is the seam that
 * keeps Lua out of every C callback.
 */
#ifndef BEEOS_EVQ_H
#define BEEOS_EVQ_H

#include <stddef.h>
#include "sse.h"

typedef struct {
    char *buf;
    size_t head;  /* offset of the oldest record */
    size_t tail;  /* offset one past the newest record */
    size_t cap;
    size_t count; /* records between head and tail */
} evq;

void evq_init(evq *q);
void evq_free(evq *q);

/* Copies the event in.  0 on success, -1 when out of memory. */
int evq_push(evq *q, const sse_event *ev);

/* The oldest event as views into the queue (valid until the next push or
 * pop).  0 when the queue is empty. */
int evq_peek(const evq *q, sse_event *ev);
void evq_pop(evq *q);

/* Bytes held: what backpressure is measured in. */
size_t evq_bytes(const evq *q);

/* An sse_sink that pushes into the evq passed as ud. */
int evq_sink(void *ud, const sse_event *ev);

#endif
