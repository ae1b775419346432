/*
 * The transfer engine: HTTP requests over one libcurl multi handle, driven
 * through the multi_socket interface.  Pure C (no Lua), pull-based: libcurl
 * callbacks only fill per-transfer buffers (status, headers, body or a queue
 * of parsed SSE events) and flag progress; the caller reads them after
 * engine_step() or engine_handle() returns.
 *
 * All timeouts live here: connect (libcurl's), the call deadline and the
 * stream idle timeout (ours, checked on every step against a monotonic clock).
 */
#ifndef BEEOS_ENGINE_H
#define BEEOS_ENGINE_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

#include "evq.h"
#include "sse.h"

typedef struct bee_engine bee_engine;
typedef struct bee_transfer bee_transfer;

typedef enum {
    BT_CONNECTING = 0, /* no complete response head yet */
    BT_HEADERS = 1,    /* status and headers known; body arriving */
    BT_DONE = 2,       /* response complete */
    BT_FAILED = 3      /* ended with an error: see bee_transfer_error() */
} bee_state;

typedef struct {
    const char *url;
    const char *method;          /* "POST" or "GET"; NULL means POST */
    const char *const *headers;  /* "Name: value" strings */
    size_t nheaders;
    const char *body;
    size_t body_len;
    int stream;                  /* parse a 2xx text/event-stream body as SSE */
    int report_comments;         /* queue SSE comment lines too */
    long connect_timeout_ms;     /* 0: libcurl's default */
    int64_t deadline_ms;         /* absolute, bee_now_ms() clock; 0: none */
    long idle_timeout_ms;        /* no bytes for this long fails; 0: none */
    size_t max_body;             /* cap on a non-SSE body; 0: 16 MiB */
    size_t max_event;            /* cap on one SSE event; 0: parser default */
    size_t queue_high;           /* pause receiving when this many bytes are
                                    queued; 0: 1 MiB */
    int insecure;                /* skip TLS peer/host verification */
    const char *ca_file;         /* NULL: system store */
} bee_request;

/* Monotonic milliseconds. */
int64_t bee_now_ms(void);

/* NULL when libcurl cannot be initialised; *err is then set. */
bee_engine *engine_new(const char **err);
/* Frees the engine and every transfer still attached to it; each one's
 * on_detach hook (see bee_transfer_set_owner) runs first. */
void engine_free(bee_engine *e);

/* Starts a request.  NULL with *err set on failure (bad option, no memory). */
bee_transfer *engine_start(bee_engine *e, const bee_request *rq, const char **err);

/* Waits up to timeout_ms (less when a timer is due) for socket activity,
 * then does all pending work.  Returns the number of transfers attached.
 * On Linux it waits on an epoll set and serves only the ready sockets;
 * elsewhere it polls them all. */
int engine_step(bee_engine *e, long timeout_ms);

/* For an outside event loop (or a wait across several engines): the
 * sockets to watch, the longest one may wait before engine_handle must be
 * called anyway (-1: no timer), and the work step given poll()'s results. */
size_t engine_pollfds(bee_engine *e, struct pollfd *out, size_t max);
size_t engine_nsockets(const bee_engine *e);
long engine_timeout_ms(bee_engine *e);
void engine_handle(bee_engine *e, const struct pollfd *fds, size_t nfds);
int engine_active(const bee_engine *e);
/* A descriptor that polls readable (POLLIN) when a socket of the engine is
 * ready: its epoll set, on Linux; -1 elsewhere, or once the set could not
 * be made or kept up (the engine then polls its sockets), so ask again
 * before each wait.  A wait across several engines can poll these instead
 * of all their sockets, then call engine_step(e, 0) on each. */
int engine_fd(const bee_engine *e);

/* Transfers that made progress (new state, bytes or events) since the last
 * call, as their ids; the list is cleared.  Returns how many were written
 * (at most max; the rest stay listed). */
size_t engine_take_ready(bee_engine *e, uint64_t *ids, size_t max);

/* Transfer accessors. */
uint64_t bee_transfer_id(const bee_transfer *t);
bee_state bee_transfer_state(const bee_transfer *t);
long bee_transfer_status(const bee_transfer *t);
/* 1 once the final response head was complete, even if the transfer failed
 * afterwards (within the same step, say): the caller then knows a response
 * came, with its status and headers. */
int bee_transfer_head_done(const bee_transfer *t);
/* Raw response header lines of the final response, each ending in "\n". */
const char *bee_transfer_headers(const bee_transfer *t, size_t *len);
/* The value of the first response header called name (any case), trimmed;
 * NULL when absent. */
const char *bee_transfer_header(const bee_transfer *t, const char *name, size_t *len);
/* The non-SSE body received so far. */
const char *bee_transfer_body(const bee_transfer *t, size_t *len);
int bee_transfer_is_sse(const bee_transfer *t);
/* Events parsed and not yet taken.  bee_transfer_events_taken() must be
 * called after popping so that a paused transfer can resume. */
evq *bee_transfer_events(bee_transfer *t);
void bee_transfer_events_taken(bee_transfer *t);
/* 1 when the stream ended inside an event (bytes discarded). */
int bee_transfer_sse_cut(const bee_transfer *t);
const char *bee_transfer_last_event_id(const bee_transfer *t, size_t *len);
/* Error code (stable name) and a human message, for BT_FAILED. */
const char *bee_transfer_error(const bee_transfer *t, const char **message);
/* Bytes of response received (head and body), for retry decisions. */
uint64_t bee_transfer_bytes_received(const bee_transfer *t);
/* Whether libcurl reused a pooled connection for this transfer. */
int bee_transfer_reused(const bee_transfer *t);

/* Cancels (if running) and frees a transfer.  Removing an unfinished
 * transfer makes libcurl close its connection instead of pooling it. */
void bee_transfer_free(bee_transfer *t);

/* Lets the binding learn when engine_free() frees a transfer it holds:
 * *slot is set to NULL then. */
void bee_transfer_set_owner(bee_transfer *t, bee_transfer **slot);

/* libcurl's version, "x.y.z". */
const char *bee_curl_version(void);

#endif
