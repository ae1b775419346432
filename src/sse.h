/*
 * Incremental Server-Sent Events parser (WHATWG HTML, "event stream
 * interpretation").  Pure C: no Lua API, no libcurl, no globals, so it can be
 * unit-tested and fuzzed alone.
 *
 * Bytes go in as they arrive, split anywhere; complete events come out
 * through a callback.  The parser works on bytes, not code points: every
 * delimiter in the format is ASCII, so UTF-8 sequences split across chunks
 * pass through untouched and NUL bytes are kept (all strings carry lengths).
 * Invalid UTF-8 is passed through rather than replaced with U+FFFD.
 *
 * Cost is linear in the input however it is chunked: each byte is scanned
 * once, and a line split across chunks is appended to one growing buffer.
 */
#ifndef BEEOS_SSE_H
#define BEEOS_SSE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define SSE_DEFAULT_MAX_EVENT (8u * 1024u * 1024u)

typedef enum {
    SSE_OK = 0,
    SSE_ERR_TOO_LARGE = 1, /* one event (or one line) exceeded max_event */
    SSE_ERR_NOMEM = 2,     /* allocation failed */
    SSE_ERR_CALLBACK = 3,  /* the sink asked to stop */
    SSE_ERR_FINISHED = 4   /* sse_feed after sse_finish */
} sse_status;

typedef enum { SSE_KIND_EVENT = 0, SSE_KIND_COMMENT = 1 } sse_kind;

/* Views into parser-owned memory, valid only during the callback. */
typedef struct {
    sse_kind kind;
    const char *type; /* event type; "message" when none was given */
    size_t type_len;
    const char *data; /* for a comment: the text after the colon */
    size_t data_len;
    const char *id;   /* last event id in force at dispatch (may be empty) */
    size_t id_len;
} sse_event;

/* Return 0 to go on; anything else stops the feed with SSE_ERR_CALLBACK. */
typedef int (*sse_sink)(void *ud, const sse_event *ev);

typedef struct {
    size_t max_event;     /* cap on the bytes held for one event */
    int report_comments;  /* deliver comment lines as SSE_KIND_COMMENT */
    sse_status status;    /* sticky: once an error, always that error */
    int finished;
    int bom_pending;      /* bytes of a leading BOM matched so far; -1 once decided */
    int last_was_cr;      /* previous chunk ended in CR: a leading LF is its pair */
    int in_event;         /* a field line was seen since the last blank line */
    int has_retry;
    int id_dirty;         /* id_buf differs from last_id */
    uint64_t retry_ms;
    uint64_t dispatched;  /* events delivered so far (statistics) */
    bee_buf line;         /* partial line carried between chunks */
    bee_buf data;         /* data lines of the current event, each + LF */
    bee_buf type;         /* event type of the current event */
    bee_buf id_buf;       /* "last event ID buffer" */
    bee_buf last_id;      /* committed "last event ID string" */
} sse_parser;

/* max_event 0 selects SSE_DEFAULT_MAX_EVENT. */
void sse_init(sse_parser *p, size_t max_event, int report_comments);
void sse_free(sse_parser *p);

/* Feed a chunk.  Calls sink for each complete event, in order. */
sse_status sse_feed(sse_parser *p, const char *bytes, size_t len,
                    sse_sink sink, void *ud);

/* End of stream: an unterminated event is discarded (as the standard
 * says).  *pending (if not NULL) is set to 1 when bytes of an incomplete
 * event or line were discarded, so a caller can tell a clean end from a
 * cut.  Further feeds fail with SSE_ERR_FINISHED. */
sse_status sse_finish(sse_parser *p, int *pending);

/* The committed last event id (never NULL; length in *len). */
const char *sse_last_event_id(const sse_parser *p, size_t *len);

/* 1 and *ms set when a valid `retry` field was seen. */
int sse_retry(const sse_parser *p, uint64_t *ms);

const char *sse_strerror(sse_status s);

#endif
