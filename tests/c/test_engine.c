/*
 * Tests of the transfer engine (src/engine.c) alone, in C: no Lua.
 *
 * A tiny scripted HTTP/1.1 server runs in threads of this binary on a free
 * loopback port (127.0.0.1, port 0, read back).  What it answers is chosen
 * by the request path (see route()); it records every request (method,
 * path, header lines, body), counts accepted connections, and counts the
 * connections it saw closed by the client while it was waiting on them.
 * The tests drive engine_new / engine_start / engine_step (or an outside
 * poll() loop) against it and check states, codes, bytes, events, timings.
 *
 * Timings are short (150-400 ms limits) with generous upper bounds, so the
 * binary runs in a few seconds and still passes under ASan or valgrind.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#ifdef __linux__
#include <sys/epoll.h>
#endif

#include "harness.h"

#include "engine.h"
#include "evq.h"
#include "sse.h"

/* ------------------------------------------------------------------ */
/* Small helpers                                                        */

static void sleep_ms(int ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static long find_mem(const char *hay, size_t n, const char *needle, size_t m) {
    size_t i;
    if (m == 0) return 0;
    for (i = 0; i + m <= n; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, m) == 0) return (long)i;
    return -1;
}

static int ieq_n(const char *a, const char *b, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z') x = (char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = (char)(y - 'A' + 'a');
        if (x != y) return 0;
    }
    return 1;
}

/* 1 when the "\n"-separated list holds exactly this line. */
static int has_line(const char *list, size_t n, const char *line) {
    size_t m = strlen(line), at = 0;
    while (at < n) {
        const char *nl = memchr(list + at, '\n', n - at);
        size_t len = nl ? (size_t)(nl - (list + at)) : n - at;
        if (len == m && memcmp(list + at, line, m) == 0) return 1;
        at += len + 1;
    }
    return 0;
}

/* 1 when some line of the list starts with this name (case-insensitive). */
static int has_header_named(const char *list, size_t n, const char *name) {
    size_t m = strlen(name), at = 0;
    while (at < n) {
        const char *nl = memchr(list + at, '\n', n - at);
        size_t len = nl ? (size_t)(nl - (list + at)) : n - at;
        if (len >= m && ieq_n(list + at, name, m)) return 1;
        at += len + 1;
    }
    return 0;
}

/* Value of key=N in the path's query string, or dflt. */
static long qnum(const char *path, const char *key, long dflt) {
    const char *q = strchr(path, '?');
    size_t m = strlen(key);
    while (q) {
        q++;
        if (strncmp(q, key, m) == 0 && q[m] == '=') return strtol(q + m + 1, NULL, 10);
        q = strchr(q, '&');
    }
    return dflt;
}

/* The path is this route, with or without a query string. */
static int is_route(const char *path, const char *route) {
    size_t m = strlen(route);
    return strncmp(path, route, m) == 0 && (path[m] == '\0' || path[m] == '?');
}

/* Bytes of /big bodies. */
static char big_byte(size_t i) { return (char)('a' + (i * 7 + i / 26) % 26); }

/* Data of the i-th /flood event: "i:" and FLOOD_PAYLOAD letters. */
#define FLOOD_PAYLOAD 160
static size_t flood_data(char *out, size_t i) {
    size_t k = (size_t)sprintf(out, "%zu:", i), j;
    for (j = 0; j < FLOOD_PAYLOAD; j++) out[k++] = (char)('a' + (i + j) % 26);
    return k;
}

/* ------------------------------------------------------------------ */
/* The scripted server                                                  */

typedef struct {
    char method[16];
    char path[256];
    char *head;      /* header lines without the request line, "\r\n" as "\n" */
    size_t head_len;
    char *body;
    size_t body_len;
    int conn_seq;    /* 1 for the first request on its connection, 2 ... */
} req_rec;

typedef struct {
    int fd;
    char *buf;
    size_t len, cap;
    int nreq;
} conn;

static struct {
    int lfd;
    int port;
    int stop[2]; /* written once to stop every server thread */
    pthread_t acceptor;
    pthread_mutex_t mu;
    int accepted;    /* connections accepted */
    int requests;    /* requests read */
    int peer_closed; /* waits that ended because the client closed */
    int gate;        /* /gated streams wait for this to be non-zero */
    req_rec last;    /* the latest request */
    pthread_t *threads;
    size_t nthreads, capthreads;
} srv = {.lfd = -1, .mu = PTHREAD_MUTEX_INITIALIZER};

static int srv_get(const int *field) {
    int v;
    pthread_mutex_lock(&srv.mu);
    v = *field;
    pthread_mutex_unlock(&srv.mu);
    return v;
}

static void srv_bump(int *field) {
    pthread_mutex_lock(&srv.mu);
    (*field)++;
    pthread_mutex_unlock(&srv.mu);
}

/* Waits up to ms for *field >= target. */
static int srv_wait_for(const int *field, int target, int ms) {
    int64_t end = bee_now_ms() + ms;
    for (;;) {
        if (srv_get(field) >= target) return 1;
        if (bee_now_ms() >= end) return 0;
        sleep_ms(5);
    }
}

/* 1: fd ready (events), 0: timed out, -1: the server is stopping. */
static int srv_wait_fd(int fd, short events, int ms) {
    struct pollfd p[2];
    nfds_t n = fd >= 0 ? 2 : 1;
    p[0].fd = srv.stop[0];
    p[0].events = POLLIN;
    p[0].revents = 0;
    p[1].fd = fd;
    p[1].events = events;
    p[1].revents = 0;
    for (;;) {
        int r = poll(p, n, ms);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 || p[0].revents) return -1;
        return r > 0;
    }
}

/* 0 after ms, -1 when the server is stopping. */
static int srv_sleep(int ms) { return srv_wait_fd(-1, 0, ms) < 0 ? -1 : 0; }

static int send_all(conn *c, const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = send(c->fd, s, n, 0);
        if (w > 0) {
            s += w;
            n -= (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (srv_wait_fd(c->fd, POLLOUT, -1) < 0) return -1;
        } else {
            return -1;
        }
    }
    return 0;
}

static int send_str(conn *c, const char *s) { return send_all(c, s, strlen(s)); }

/* One chunk of a chunked body, in one send. */
static int send_chunk(conn *c, const char *s, size_t n) {
    char *b = malloc(n + 32);
    int k, r;
    if (!b) return -1;
    k = sprintf(b, "%zx\r\n", n);
    memcpy(b + k, s, n);
    memcpy(b + k + n, "\r\n", 2);
    r = send_all(c, b, (size_t)k + n + 2);
    free(b);
    return r;
}

static int send_chunk_str(conn *c, const char *s) { return send_chunk(c, s, strlen(s)); }

static int send_end(conn *c) { return send_str(c, "0\r\n\r\n"); }

/* 1: bytes read into the buffer, 0: the client closed, -1: stopping. */
static int conn_fill(conn *c) {
    if (c->cap - c->len < 16384) {
        size_t cap = c->cap ? c->cap * 2 : 65536;
        char *p = realloc(c->buf, cap);
        if (!p) return -1;
        c->buf = p;
        c->cap = cap;
    }
    for (;;) {
        ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (r > 0) {
            c->len += (size_t)r;
            return 1;
        }
        if (r == 0) return 0;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (srv_wait_fd(c->fd, POLLIN, -1) < 0) return -1;
            continue;
        }
        return 0; /* reset: closed too */
    }
}

/* Waits until the client closes the connection (counted in peer_closed);
 * what it sends meanwhile is discarded.  Returns 0 (close it). */
static int wait_close(conn *c) {
    for (;;) {
        int r;
        c->len = 0;
        r = conn_fill(c);
        if (r < 0) return 0;
        if (r == 0) {
            srv_bump(&srv.peer_closed);
            return 0;
        }
    }
}

/* 1: a request read into r (caller frees head and body), 0: closed,
 * -1: stopping or malformed. */
static int read_request(conn *c, req_rec *r) {
    long hend, le;
    size_t clen = 0, at, total;
    const char *sp1, *sp2;
    for (;;) {
        int f;
        hend = find_mem(c->buf, c->len, "\r\n\r\n", 4);
        if (hend >= 0) break;
        f = conn_fill(c);
        if (f <= 0) return f;
    }
    memset(r, 0, sizeof *r);
    le = find_mem(c->buf, (size_t)hend + 2, "\r\n", 2);
    sp1 = memchr(c->buf, ' ', (size_t)le);
    sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(c->buf + le - sp1 - 1)) : NULL;
    if (!sp1 || !sp2 || (size_t)(sp1 - c->buf) >= sizeof r->method ||
        (size_t)(sp2 - sp1 - 1) >= sizeof r->path)
        return -1;
    memcpy(r->method, c->buf, (size_t)(sp1 - c->buf));
    memcpy(r->path, sp1 + 1, (size_t)(sp2 - sp1 - 1));
    /* Header lines, CRLF turned into LF. */
    r->head = malloc((size_t)hend + 1);
    if (!r->head) return -1;
    for (at = (size_t)le + 2; at < (size_t)hend + 2;) {
        long e = find_mem(c->buf + at, (size_t)hend + 2 - at, "\r\n", 2);
        size_t n;
        if (e < 0) break; /* cannot happen: the head ends in CRLF */
        n = (size_t)e;
        memcpy(r->head + r->head_len, c->buf + at, n);
        r->head_len += n;
        r->head[r->head_len++] = '\n';
        if (n >= 15 && ieq_n(c->buf + at, "content-length:", 15))
            clen = (size_t)strtoul(c->buf + at + 15, NULL, 10);
        at += n + 2;
    }
    total = (size_t)hend + 4 + clen;
    while (c->len < total) {
        int f = conn_fill(c);
        if (f <= 0) {
            free(r->head);
            return f;
        }
    }
    r->body = malloc(clen ? clen : 1);
    if (!r->body) {
        free(r->head);
        return -1;
    }
    memcpy(r->body, c->buf + hend + 4, clen);
    r->body_len = clen;
    memmove(c->buf, c->buf + total, c->len - total);
    c->len -= total;
    r->conn_seq = ++c->nreq;
    return 1;
}

static int respond(conn *c, int status, const char *reason, const char *ctype,
                   const char *extra, const char *body, size_t n) {
    char head[512];
    snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n",
             status, reason, ctype, n, extra ? extra : "");
    if (send_str(c, head)) return -1;
    return send_all(c, body, n);
}

static const char SSE_HEAD[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    "Transfer-Encoding: chunked\r\n\r\n";

static const char JSON_BODY[] = "{\"ok\":true,\"n\":1}";
static const char BODY_429[] = "{\"error\":{\"code\":\"rate_limited\"}}";

/* Answers one request; 1 keeps the connection for the next one. */
static int route(conn *c, const char *path) {
    if (is_route(path, "/json"))
        return respond(c, 200, "OK", "application/json", "X-Test: yes\r\n", JSON_BODY,
                       sizeof JSON_BODY - 1) == 0;
    if (is_route(path, "/early-hints")) {
        if (send_str(c, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n") ||
            srv_sleep(10))
            return 0;
        return respond(c, 200, "OK", "application/json", "X-Final: 1\r\n", JSON_BODY,
                       sizeof JSON_BODY - 1) == 0;
    }
    if (is_route(path, "/json-close"))
        /* The server closes after each answer: a new socket every time. */
        return (respond(c, 200, "OK", "application/json", "Connection: close\r\n", JSON_BODY,
                        sizeof JSON_BODY - 1),
                0);
    if (is_route(path, "/status/429"))
        return respond(c, 429, "Too Many Requests", "application/json", "Retry-After: 7\r\n",
                       BODY_429, sizeof BODY_429 - 1) == 0;
    if (is_route(path, "/sse")) {
        /* Chunks split inside a line; a comment; a CRLF event. */
        if (send_str(c, SSE_HEAD) || srv_sleep(30) ||
            send_chunk_str(c, "event: greet\ndata: hel") || srv_sleep(30) ||
            send_chunk_str(c, "lo\nid: 1\n\ndata: line1\ndata: line2\n\n: just a comment\n\n"
                              "data: crlf\r\n\r\n") ||
            srv_sleep(30) || send_chunk_str(c, "id: 42\nevent: end\ndata: {\"done\":true}\n\n") ||
            send_end(c))
            return 0;
        return 1;
    }
    if (is_route(path, "/sse-503")) {
        if (send_str(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/event-stream\r\n"
                        "Transfer-Encoding: chunked\r\n\r\n") ||
            send_chunk_str(c, "data: not an event\n\n") || send_end(c))
            return 0;
        return 1;
    }
    if (is_route(path, "/cut")) {
        /* Ends without the chunked terminator; ?partial=1 inside an event. */
        if (send_str(c, SSE_HEAD) || send_chunk_str(c, "id: 7\ndata: one\n\ndata: two\n\n") ||
            srv_sleep(20))
            return 0;
        if (qnum(path, "partial", 0) && (send_chunk_str(c, "data: partial") || srv_sleep(20)))
            return 0;
        return 0;
    }
    if (is_route(path, "/cut-body")) {
        char half[500];
        memset(half, 'z', sizeof half);
        if (send_str(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        "Content-Length: 1000\r\n\r\n") ||
            send_all(c, half, sizeof half))
            return 0;
        srv_sleep(20);
        return 0;
    }
    if (is_route(path, "/close-now")) return 0;
    if (is_route(path, "/stall-head")) return wait_close(c);
    if (is_route(path, "/stall-after-head")) {
        if (srv_sleep((int)qnum(path, "delay", 0)) || send_str(c, SSE_HEAD)) return 0;
        return wait_close(c);
    }
    if (is_route(path, "/heartbeat")) {
        long i, n = qnum(path, "n", 8);
        int every = (int)qnum(path, "every", 50);
        if (send_str(c, SSE_HEAD)) return 0;
        for (i = 0; i < n; i++)
            if (srv_sleep(every) || send_chunk_str(c, ": hb\n\n")) return 0;
        if (send_chunk_str(c, "data: after heartbeats\n\n") || send_end(c)) return 0;
        return 1;
    }
    if (is_route(path, "/slow-sse")) {
        long i, n = qnum(path, "n", 3);
        int every = (int)qnum(path, "every", 50);
        if (send_str(c, SSE_HEAD)) return 0;
        for (i = 0; i < n; i++) {
            char ev[64];
            snprintf(ev, sizeof ev, "id: %ld\ndata: tick %ld\n\n", i, i);
            if (srv_sleep(every) || send_chunk_str(c, ev)) return 0;
        }
        return send_end(c) == 0;
    }
    if (is_route(path, "/gated")) {
        /* The head, then n events 20 ms apart once the test opens the gate. */
        long i, n = qnum(path, "n", 4);
        if (send_str(c, SSE_HEAD)) return 0;
        while (!srv_get(&srv.gate))
            if (srv_sleep(5)) return 0;
        for (i = 0; i < n; i++) {
            char ev[64];
            snprintf(ev, sizeof ev, "id: %ld\ndata: tick %ld\n\n", i, i);
            if (srv_sleep(20) || send_chunk_str(c, ev)) return 0;
        }
        return send_end(c) == 0;
    }
    if (is_route(path, "/fill-then-huge")) {
        /* 100 small events in one chunk (~4.6 KB, ~7 KB once queued), a
         * pause, then one 64 KiB data line. */
        char evs[8192], *huge;
        size_t len = 0;
        long i;
        int r;
        for (i = 0; i < 100; i++)
            len += (size_t)snprintf(evs + len, sizeof evs - len,
                                    "id: %ld\ndata: small event %03ld .........\n\n", i, i);
        if (send_str(c, SSE_HEAD) || send_chunk(c, evs, len) || srv_sleep(60)) return 0;
        huge = malloc(65536 + 16);
        if (!huge) return 0;
        memcpy(huge, "data: ", 6);
        memset(huge + 6, 'h', 65536);
        memcpy(huge + 6 + 65536, "\n\n", 2);
        r = send_chunk(c, huge, 65536 + 8) || send_end(c);
        free(huge);
        return r == 0;
    }
    if (is_route(path, "/fill-then-stall")) {
        /* 100 small events in one chunk (~7 KB once queued), one more event
         * 30 ms later (held by a consumer that took nothing), then silence. */
        char evs[8192];
        size_t len = 0;
        long i;
        for (i = 0; i < 100; i++)
            len += (size_t)snprintf(evs + len, sizeof evs - len,
                                    "id: %ld\ndata: small event %03ld .........\n\n", i, i);
        if (send_str(c, SSE_HEAD) || send_chunk(c, evs, len) || srv_sleep(30) ||
            send_chunk_str(c, "id: held\ndata: held\n\n"))
            return 0;
        return wait_close(c);
    }
    if (is_route(path, "/cancel")) {
        if (send_str(c, SSE_HEAD) || send_chunk_str(c, "data: first\n\n")) return 0;
        return wait_close(c);
    }
    if (is_route(path, "/big")) {
        size_t n = (size_t)qnum(path, "n", 1000), i, at;
        char head[160], piece[65536];
        snprintf(head, sizeof head,
                 "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                 "Content-Length: %zu\r\n\r\n",
                 n);
        if (send_str(c, head)) return 0;
        for (at = 0; at < n;) {
            size_t k = n - at < sizeof piece ? n - at : sizeof piece;
            for (i = 0; i < k; i++) piece[i] = big_byte(at + i);
            if (send_all(c, piece, k)) return 0;
            at += k;
        }
        return 1;
    }
    if (is_route(path, "/huge-event")) {
        size_t n = (size_t)qnum(path, "n", 100000);
        char *ev = malloc(n + 16);
        int r;
        if (!ev) return 0;
        memcpy(ev, "data: ", 6);
        memset(ev + 6, 'x', n);
        memcpy(ev + 6 + n, "\n\n", 2);
        r = send_str(c, SSE_HEAD) || send_chunk_str(c, "data: small\n\n") ||
            send_chunk(c, ev, n + 8) || send_end(c);
        free(ev);
        return r == 0;
    }
    if (is_route(path, "/flood")) {
        /* n events of ~190 bytes, sent in chunks of ~64 KiB, after
         * `delay` ms. */
        size_t n = (size_t)qnum(path, "n", 1000), i;
        size_t cap = 65536 + 512, len = 0;
        char *batch;
        int bad = 0;
        if (srv_sleep((int)qnum(path, "delay", 0))) return 0;
        batch = malloc(cap);
        if (!batch) return 0;
        bad = send_str(c, SSE_HEAD);
        for (i = 0; i < n && !bad; i++) {
            len += (size_t)sprintf(batch + len, "id: %zu\ndata: ", i);
            len += flood_data(batch + len, i);
            batch[len++] = '\n';
            batch[len++] = '\n';
            if (len >= 65536 || i + 1 == n) {
                bad = send_chunk(c, batch, len);
                len = 0;
            }
        }
        free(batch);
        return !bad && send_end(c) == 0;
    }
    if (is_route(path, "/many-headers")) {
        long i, n = qnum(path, "n", 80);
        char line[1100];
        if (send_str(c, "HTTP/1.1 200 OK\r\n")) return 0;
        for (i = 0; i < n; i++) {
            int k = snprintf(line, sizeof line, "X-Filler-%04ld: ", i);
            memset(line + k, 'f', 1000);
            memcpy(line + k + 1000, "\r\n", 3);
            if (send_str(c, line)) return 0;
        }
        return send_str(c, "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}") == 0;
    }
    respond(c, 404, "Not Found", "text/plain", NULL, "no such route", 13);
    return 1;
}

static void *conn_main(void *arg) {
    conn *c = (conn *)arg;
    for (;;) {
        req_rec r;
        char path[256];
        int keep;
        if (read_request(c, &r) <= 0) break;
        memcpy(path, r.path, sizeof path);
        pthread_mutex_lock(&srv.mu);
        free(srv.last.head);
        free(srv.last.body);
        srv.last = r;
        srv.requests++;
        pthread_mutex_unlock(&srv.mu);
        keep = route(c, path);
        if (!keep) break;
    }
    close(c->fd);
    free(c->buf);
    free(c);
    return NULL;
}

static void *accept_main(void *arg) {
    (void)arg;
    for (;;) {
        int fd, one = 1;
        conn *c;
        pthread_t th;
        if (srv_wait_fd(srv.lfd, POLLIN, -1) < 0) break;
        fd = accept(srv.lfd, NULL, NULL);
        if (fd < 0) continue;
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        pthread_mutex_lock(&srv.mu);
        srv.accepted++;
        if (srv.nthreads == srv.capthreads) {
            size_t cap = srv.capthreads ? srv.capthreads * 2 : 32;
            pthread_t *p = realloc(srv.threads, cap * sizeof *p);
            if (p) {
                srv.threads = p;
                srv.capthreads = cap;
            }
        }
        if (srv.nthreads < srv.capthreads && pthread_create(&th, NULL, conn_main, c) == 0) {
            srv.threads[srv.nthreads++] = th;
        } else {
            close(fd);
            free(c);
        }
        pthread_mutex_unlock(&srv.mu);
    }
    return NULL;
}

static int server_start(void) {
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    int one = 1;
    if (pipe(srv.stop)) return -1;
    srv.lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (srv.lfd < 0) return -1;
    setsockopt(srv.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (bind(srv.lfd, (struct sockaddr *)&a, sizeof a) || listen(srv.lfd, 64) ||
        getsockname(srv.lfd, (struct sockaddr *)&a, &alen))
        return -1;
    srv.port = ntohs(a.sin_port);
    return pthread_create(&srv.acceptor, NULL, accept_main, NULL) ? -1 : 0;
}

static void server_stop(void) {
    size_t i;
    if (write(srv.stop[1], "x", 1) != 1) perror("server_stop");
    pthread_join(srv.acceptor, NULL);
    for (i = 0; i < srv.nthreads; i++) pthread_join(srv.threads[i], NULL);
    free(srv.threads);
    free(srv.last.head);
    free(srv.last.body);
    close(srv.lfd);
    close(srv.stop[0]);
    close(srv.stop[1]);
}

/* ------------------------------------------------------------------ */
/* Driving the engine                                                   */

static const char *url_at(int port, const char *path) {
    static char bufs[8][512];
    static unsigned k;
    char *b = bufs[k++ % 8];
    snprintf(b, sizeof bufs[0], "http://127.0.0.1:%d%s", port, path);
    return b;
}

static const char *url(const char *path) { return url_at(srv.port, path); }

static bee_request req(const char *path) {
    bee_request rq;
    memset(&rq, 0, sizeof rq);
    rq.url = url(path);
    rq.method = "GET";
    return rq;
}

static bee_engine *new_engine(void) {
    const char *err = NULL;
    bee_engine *e = engine_new(&err);
    if (!e) fprintf(stderr, "engine_new: %s\n", err ? err : "?");
    return e;
}

static bee_transfer *start(bee_engine *e, const bee_request *rq) {
    const char *err = NULL;
    bee_transfer *t = engine_start(e, rq, &err);
    if (!t) fprintf(stderr, "engine_start(%s): %s\n", rq->url, err ? err : "?");
    return t;
}

static int is_final(const bee_transfer *t) {
    bee_state s = bee_transfer_state(t);
    return s == BT_DONE || s == BT_FAILED;
}

/* Steps until t ends or max_ms pass; returns its state. */
static bee_state run(bee_engine *e, bee_transfer *t, int max_ms) {
    int64_t end = bee_now_ms() + max_ms;
    while (!is_final(t) && bee_now_ms() < end) engine_step(e, 20);
    return bee_transfer_state(t);
}

static void check_err(const bee_transfer *t, const char *code, int line) {
    const char *msg = NULL;
    const char *got = bee_transfer_error(t, &msg);
    if (!code) {
        if (!harness_check(got == NULL, __FILE__, line, "no error code"))
            fprintf(stderr, "     got %s (%s)\n", got, msg ? msg : "");
        return;
    }
    if (!harness_check_mem(got ? got : "(none)", strlen(got ? got : "(none)"), code, strlen(code),
                           __FILE__, line, "error code"))
        fprintf(stderr, "     message: %s\n", msg ? msg : "(null)");
    harness_check(msg && msg[0], __FILE__, line, "an error message");
}
#define CHECK_ERR(t, code) check_err((t), (code), __LINE__)

static void pop_expect(bee_transfer *t, sse_kind kind, const char *type, const char *data,
                       size_t data_len, const char *id, int line) {
    evq *q = bee_transfer_events(t);
    sse_event ev;
    if (!harness_check(evq_peek(q, &ev), __FILE__, line, "an event is queued")) return;
    harness_check_u((uint64_t)ev.kind, (uint64_t)kind, __FILE__, line, "event kind");
    if (type) harness_check_mem(ev.type, ev.type_len, type, strlen(type), __FILE__, line, "event type");
    harness_check_mem(ev.data, ev.data_len, data, data_len, __FILE__, line, "event data");
    if (id) harness_check_mem(ev.id, ev.id_len, id, strlen(id), __FILE__, line, "event id");
    evq_pop(q);
}
#define POP_EV(t, type, data, id) \
    pop_expect((t), SSE_KIND_EVENT, (type), (data), strlen(data), (id), __LINE__)
#define POP_COMMENT(t, text) \
    pop_expect((t), SSE_KIND_COMMENT, NULL, (text), strlen(text), NULL, __LINE__)

static size_t queued(bee_transfer *t) { return bee_transfer_events(t)->count; }

#define HEADERS_HAVE(t, line)                             \
    do {                                                  \
        size_t hl_;                                       \
        const char *h_ = bee_transfer_headers((t), &hl_); \
        CHECK(has_line(h_, hl_, (line)));                 \
    } while (0)

/* ------------------------------------------------------------------ */
/* Plain responses                                                      */

TEST(json_response_and_request) {
    static const char body[] = "{\"q\":\"a\0b\",\"n\":1}"; /* a NUL inside */
    const char *hdrs[] = {"X-Api-Key: secret-123", "Content-Type: application/json",
                          "Accept: application/json"};
    bee_engine *e = new_engine();
    bee_request rq;
    bee_transfer *t;
    const char *p;
    size_t n;
    char *big;
    size_t i, big_len = 1200000;
    if (!CHECK(e)) return;

    rq = req("/json");
    rq.method = "POST";
    rq.headers = hdrs;
    rq.nheaders = 3;
    rq.body = body;
    rq.body_len = sizeof body - 1;
    t = start(e, &rq);
    if (!CHECK(t)) goto out;
    CHECK(bee_transfer_id(t) != 0);
    CHECK_EQ_U(bee_transfer_state(t), BT_CONNECTING);
    CHECK_EQ_U(run(e, t, 3000), BT_DONE);
    CHECK_EQ_U(bee_transfer_status(t), 200);
    CHECK(bee_transfer_head_done(t));
    CHECK(!bee_transfer_is_sse(t));
    CHECK_ERR(t, NULL);
    HEADERS_HAVE(t, "X-Test: yes");
    HEADERS_HAVE(t, "Content-Type: application/json");
    HEADERS_HAVE(t, "Content-Length: 17");
    p = bee_transfer_headers(t, &n);
    CHECK(n > 0 && p[n - 1] == '\n');
    CHECK(find_mem(p, n, "\r", 1) < 0);
    p = bee_transfer_body(t, &n);
    CHECK_MEM(p, n, JSON_BODY, sizeof JSON_BODY - 1);
    CHECK(bee_transfer_bytes_received(t) > n + 40);
    CHECK_EQ_U(queued(t), 0);
    CHECK_EQ_U(engine_active(e), 0);
    /* What the server got. */
    pthread_mutex_lock(&srv.mu);
    CHECK_LIT(srv.last.method, strlen(srv.last.method), "POST");
    CHECK_LIT(srv.last.path, strlen(srv.last.path), "/json");
    CHECK(has_line(srv.last.head, srv.last.head_len, "X-Api-Key: secret-123"));
    CHECK(has_line(srv.last.head, srv.last.head_len, "Content-Type: application/json"));
    CHECK(has_line(srv.last.head, srv.last.head_len, "Accept: application/json"));
    CHECK(has_line(srv.last.head, srv.last.head_len, "Content-Length: 17"));
    CHECK(!has_header_named(srv.last.head, srv.last.head_len, "expect:"));
    CHECK_MEM(srv.last.body, srv.last.body_len, body, sizeof body - 1);
    pthread_mutex_unlock(&srv.mu);
    bee_transfer_free(t);

    /* A large body: sent whole, no "Expect: 100-continue" wait. */
    big = malloc(big_len);
    if (!CHECK(big)) goto out;
    for (i = 0; i < big_len; i++) big[i] = big_byte(i);
    rq = req("/json?big=1");
    rq.method = NULL; /* POST */
    rq.body = big;
    rq.body_len = big_len;
    t = start(e, &rq);
    if (CHECK(t)) {
        int64_t t0 = bee_now_ms();
        CHECK_EQ_U(run(e, t, 3000), BT_DONE);
        CHECK(bee_now_ms() - t0 < 900); /* libcurl's Expect wait is 1 s */
        CHECK_EQ_U(bee_transfer_status(t), 200);
        pthread_mutex_lock(&srv.mu);
        CHECK_LIT(srv.last.method, strlen(srv.last.method), "POST");
        CHECK(!has_header_named(srv.last.head, srv.last.head_len, "expect:"));
        CHECK_MEM(srv.last.body, srv.last.body_len, big, big_len);
        pthread_mutex_unlock(&srv.mu);
        bee_transfer_free(t);
    }
    free(big);

    /* GET: no body sent. */
    rq = req("/json?x=1");
    t = start(e, &rq);
    if (CHECK(t)) {
        CHECK_EQ_U(run(e, t, 3000), BT_DONE);
        pthread_mutex_lock(&srv.mu);
        CHECK_LIT(srv.last.method, strlen(srv.last.method), "GET");
        CHECK_LIT(srv.last.path, strlen(srv.last.path), "/json?x=1");
        CHECK_EQ_U(srv.last.body_len, 0);
        pthread_mutex_unlock(&srv.mu);
        bee_transfer_free(t);
    }
out:
    engine_free(e);
}

TEST(status_429_and_1xx) {
    bee_engine *e = new_engine();
    bee_request rq;
    bee_transfer *t;
    const char *p;
    size_t n;
    int stream;
    if (!CHECK(e)) return;
    for (stream = 0; stream <= 1; stream++) {
        rq = req("/status/429");
        rq.method = "POST";
        rq.body = "{}";
        rq.body_len = 2;
        rq.stream = stream; /* not an event stream: kept as a body either way */
        t = start(e, &rq);
        if (!CHECK(t)) break;
        CHECK_EQ_U(run(e, t, 3000), BT_DONE);
        CHECK_EQ_U(bee_transfer_status(t), 429);
        CHECK_ERR(t, NULL);
        CHECK(!bee_transfer_is_sse(t));
        HEADERS_HAVE(t, "Retry-After: 7");
        p = bee_transfer_body(t, &n);
        CHECK_MEM(p, n, BODY_429, sizeof BODY_429 - 1);
        CHECK_EQ_U(queued(t), 0);
        bee_transfer_free(t);
    }
    /* A 1xx before the final response: only the final head is kept. */
    rq = req("/early-hints");
    t = start(e, &rq);
    if (CHECK(t)) {
        CHECK_EQ_U(run(e, t, 3000), BT_DONE);
        CHECK_EQ_U(bee_transfer_status(t), 200);
        HEADERS_HAVE(t, "X-Final: 1");
        p = bee_transfer_headers(t, &n);
        CHECK(!has_header_named(p, n, "link:"));
        p = bee_transfer_body(t, &n);
        CHECK_MEM(p, n, JSON_BODY, sizeof JSON_BODY - 1);
        bee_transfer_free(t);
    }
    engine_free(e);
}

/* ------------------------------------------------------------------ */
/* Server-sent events                                                   */

static void sse_case(int comments) {
    bee_engine *e = new_engine();
    bee_request rq;
    bee_transfer *t;
    int saw_headers = 0;
    int64_t end;
    const char *p;
    size_t n;
    if (!CHECK(e)) return;
    rq = req("/sse");
    rq.method = "POST";
    rq.body = "{\"stream\":true}";
    rq.body_len = strlen(rq.body);
    rq.stream = 1;
    rq.report_comments = comments;
    t = start(e, &rq);
    if (!CHECK(t)) goto out;
    end = bee_now_ms() + 3000;
    while (!is_final(t) && bee_now_ms() < end) {
        engine_step(e, 5);
        if (bee_transfer_state(t) == BT_HEADERS) saw_headers = 1;
    }
    CHECK(saw_headers);
    CHECK_EQ_U(bee_transfer_state(t), BT_DONE);
    CHECK_ERR(t, NULL);
    CHECK_EQ_U(bee_transfer_status(t), 200);
    CHECK(bee_transfer_is_sse(t));
    CHECK(!bee_transfer_sse_cut(t));
    HEADERS_HAVE(t, "Content-Type: text/event-stream");
    bee_transfer_body(t, &n);
    CHECK_EQ_U(n, 0);
    CHECK_EQ_U(queued(t), comments ? 5 : 4);
    POP_EV(t, "greet", "hello", "1");
    POP_EV(t, "message", "line1\nline2", "1");
    if (comments) POP_COMMENT(t, " just a comment");
    POP_EV(t, "message", "crlf", "1");
    POP_EV(t, "end", "{\"done\":true}", "42");
    CHECK_EQ_U(queued(t), 0);
    CHECK_EQ_U(evq_bytes(bee_transfer_events(t)), 0);
    p = bee_transfer_last_event_id(t, &n);
    CHECK_LIT(p, n, "42");
    bee_transfer_free(t);
out:
    engine_free(e);
}

TEST(sse_stream_events) { sse_case(0); }
TEST(sse_stream_with_comments) { sse_case(1); }

TEST(sse_not_parsed_unless_2xx_and_asked) {
    bee_engine *e = new_engine();
    bee_request rq;
    bee_transfer *t;
    const char *p;
    size_t n;
    if (!CHECK(e)) return;
    /* 503 with Content-Type text/event-stream: the body is kept. */
    rq = req("/sse-503");
    rq.stream = 1;
    t = start(e, &rq);
    if (CHECK(t)) {
        CHECK_EQ_U(run(e, t, 3000), BT_DONE);
        CHECK_EQ_U(bee_transfer_status(t), 503);
        CHECK(!bee_transfer_is_sse(t));
        CHECK_EQ_U(queued(t), 0);
        p = bee_transfer_body(t, &n);
        CHECK_LIT(p, n, "data: not an event\n\n");
        p = bee_transfer_last_event_id(t, &n);
        CHECK_EQ_U(n, 0);
        bee_transfer_free(t);
    }
    /* A 200 event stream without stream=1: the raw body. */
    rq = req("/slow-sse?n=2&every=1");
    t = start(e, &rq);
    if (CHECK(t)) {
        CHECK_EQ_U(run(e, t, 3000), BT_DONE);
        CHECK(!bee_transfer_is_sse(t));
        CHECK_EQ_U(queued(t), 0);
        p = bee_transfer_body(t, &n);
        CHECK_LIT(p, n, "id: 0\ndata: tick 0\n\nid: 1\ndata: tick 1\n\n");
        bee_transfer_free(t);
    }
    engine_free(e);
}

/* ------------------------------------------------------------------ */
/* Interrupted responses                                                */

TEST(stream_cut) {
    bee_engine *e = new_engine();
    bee_request rq;
    bee_transfer *t;
    const char *p;
    size_t n;
    int partial;
    if (!CHECK(e)) return;
    for (partial = 1; partial >= 0; partial--) {
        rq = req(partial ? "/cut?partial=1" : "/cut");
        rq.stream = 1;
        t = start(e, &rq);
        if (!CHECK(t)) break;
        CHECK_EQ_U(run(e, t, 3000), BT_FAILED);
        CHECK_ERR(t, "stream_interrupted");
        CHECK(bee_transfer_head_done(t));
        CHECK_EQ_U(bee_transfer_status(t), 200);
        CHECK(bee_transfer_is_sse(t));
        CHECK_EQ_U(bee_transfer_sse_cut(t), partial);
        CHECK_EQ_U(queued(t), 2);
        POP_EV(t, "message", "one", "7");
        POP_EV(t, "message", "two", "7");
        p = bee_transfer_last_event_id(t, &n);
        CHECK_LIT(p, n, "7");
        bee_transfer_free(t);
    }
    /* A plain body shorter than its Content-Length. */
    rq = req("/cut-body");
    t = start(e, &rq);
    if (CHECK(t)) {
        CHECK_EQ_U(run(e, t, 3000), BT_FAILED);
        CHECK_ERR(t, "response_interrupted");
        CHECK(bee_transfer_head_done(t));
        bee_transfer_body(t, &n);
        CHECK_EQ_U(n, 500);
        bee_transfer_free(t);
    }
    /* Closed before any response. */
    rq = req("/close-now");
    t = start(e, &rq);
    if (CHECK(t)) {
        CHECK_EQ_U(run(e, t, 3000), BT_FAILED);
        CHECK_ERR(t, "connection_closed");
        CHECK(!bee_transfer_head_done(t));
        CHECK_EQ_U(bee_transfer_status(t), 0);
        bee_transfer_free(t);
    }
    engine_free(e);
}

/* ------------------------------------------------------------------ */
/* Timeouts                                                             */

TEST(idle_timeout_after_head) {
    const long idle = 200, delay = 150;
    bee_engine *e = new_engine();
    bee_request rq;
    bee_transfer *t;
    int64_t t0, t_head = 0, t_end, end;
    if (!CHECK(e)) return;
    /* Head after 150 ms, then silence: idle counts from the head. */
    rq = req("/stall-after-head?delay=150");
    rq.stream = 1;
    rq.idle_timeout_ms = idle;
    t = start(e, &rq);
    if (!CHECK(t)) goto out;
    t0 = bee_now_ms();
    end = t0 + 3000;
    while (!is_final(t) && bee_now_ms() < end) {
        engine_step(e, 50);
        if (!t_head && bee_transfer_head_done(t)) t_head = bee_now_ms();
    }
    t_end = bee_now_ms();
    CHECK_EQ_U(bee_transfer_state(t), BT_FAILED);
    CHECK_ERR(t, "idle_timeout");
    CHECK(bee_transfer_head_done(t));
    CHECK(bee_transfer_is_sse(t));
    CHECK_EQ_U(bee_transfer_status(t), 200);
    CHECK(t_head > 0);
    CHECK(t_end - t0 >= delay + idle);
    CHECK(t_end - t_head >= idle - 20);
    CHECK(t_end - t_head < idle + 1000);
    if (t_end - t0 < delay + idle || t_end - t_head >= idle + 1000)
        fprintf(stderr, "     idle fired %lld ms after start, %lld after the head\n",
                (long long)(t_end - t0), (long long)(t_end - t_head));
    CHECK_EQ_U(engine_active(e), 0);
    bee_transfer_free(t);
out:
    engine_free(e);
}

TEST(heartbeats_keep_stream_alive) {
    const long idle = 150;
    bee_engine *e = new_engine();
    bee_request rq;
    bee_transfer *t;
    int64_t t0;
    int i;
    if (!CHECK(e)) return;
    /* 8 comments 50 ms apart (400 ms in all) under a 150 ms idle limit. */
    rq = req("/heartbeat?n=8&every=50");
    rq.stream = 1;
    rq.report_comments = 1;
    rq.idle_timeout_ms = idle;
    t = start(e, &rq);
    if (!CHECK(t)) goto out;
    t0 = bee_now_ms();
    CHECK_EQ_U(run(e, t, 4000), BT_DONE);
    CHECK(bee_now_ms() - t0 >= 400);
    CHECK_ERR(t, NULL);
    CHECK_EQ_U(queued(t), 9);
    for (i = 0; i < 8; i++) POP_COMMENT(t, " hb");
    POP_EV(t, "message", "after heartbeats", "");
    bee_transfer_free(t);
out:
    engine_free(e);
}

TEST(deadline_without_answer) {
    const int64_t limit = 250;
    bee_engine *e = new_engine();
    bee_request rq;
    bee_transfer *t;
    int64_t t0, el;
    int closed0 = srv_get(&srv.peer_closed);
    if (!CHECK(e)) return;
    /* The server reads the request and never answers.  The idle limit is
     * shorter than the deadline but only counts once a head came. */
    rq = req("/stall-head");
    rq.stream = 1;
    rq.idle_timeout_ms = 100;
    t0 = bee_now_ms();
    rq.deadline_ms = t0 + limit;
    t = start(e, &rq);
    if (!CHECK(t)) goto out;
    CHECK_EQ_U(run(e, t, 4000), BT_FAILED);
    el = bee_now_ms() - t0;
    CHECK_ERR(t, "deadline");
    CHECK(el >= limit);
    CHECK(el < limit + 1000);
    CHECK(!bee_transfer_head_done(t));
    CHECK_EQ_U(bee_transfer_status(t), 0);
    CHECK_EQ_U(bee_transfer_bytes_received(t), 0);
    /* The abandoned connection is closed. */
    CHECK(srv_wait_for(&srv.peer_closed, closed0 + 1, 2000));
    bee_transfer_free(t);

    /* A deadline already past fails at the first step. */
    rq = req("/json");
    rq.deadline_ms = bee_now_ms() - 1;
    t = start(e, &rq);
    if (CHECK(t)) {
        engine_step(e, 0);
        CHECK_EQ_U(bee_transfer_state(t), BT_FAILED);
        CHECK_ERR(t, "deadline");
        bee_transfer_free(t);
    }
out:
    engine_free(e);
}

/* ------------------------------------------------------------------ */
/* Failures before a response                                           */

TEST(connect_failed_on_closed_port) {
    bee_engine *e = new_engine();
    bee_request rq;
    bee_transfer *t;
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int64_t t0;
    if (!CHECK(e) || !CHECK(fd >= 0)) {
        engine_free(e);
        return;
    }
    /* Bound, never listening: connections to it are refused, and no one
     * else can take the port meanwhile. */
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (!CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
               getsockname(fd, (struct sockaddr *)&a, &alen) == 0))
        goto out;
    memset(&rq, 0, sizeof rq);
    rq.url = url_at(ntohs(a.sin_port), "/json");
    rq.connect_timeout_ms = 2000;
    t0 = bee_now_ms();
    t = start(e, &rq);
    if (CHECK(t)) {
        CHECK_EQ_U(run(e, t, 4000), BT_FAILED);
        CHECK_ERR(t, "connect_failed");
        CHECK(bee_now_ms() - t0 < 1500);
        CHECK(!bee_transfer_head_done(t));
        bee_transfer_free(t);
    }
out:
    close(fd);
    engine_free(e);
}

TEST(start_errors_and_bad_urls) {
    bee_engine *e = new_engine();
    bee_request rq;
    bee_transfer *t;
    const char *err = NULL;
    if (!CHECK(e)) return;
    rq = req("/json");
    rq.method = "PUT";
    t = engine_start(e, &rq, &err);
    CHECK(t == NULL);
    CHECK(err && strcmp(err, "unsupported method") == 0);
    CHECK_EQ_U(engine_active(e), 0);
    if (t) bee_transfer_free(t);
    /* Protocols other than http(s) are refused without any traffic. */
    memset(&rq, 0, sizeof rq);
    rq.url = "ftp://127.0.0.1:1/x";
    t = start(e, &rq);
    if (CHECK(t)) {
        CHECK_EQ_U(run(e, t, 3000), BT_FAILED);
        CHECK_ERR(t, "bad_url");
        bee_transfer_free(t);
    }
    rq.url = "http://[::1";
    t = start(e, &rq);
    if (CHECK(t)) {
        CHECK_EQ_U(run(e, t, 3000), BT_FAILED);
        CHECK_ERR(t, "bad_url");
        bee_transfer_free(t);
    }
    engine_free(e);
}

/* ------------------------------------------------------------------ */
/* Caps                                                                 */

TEST(max_body_cap) {
    bee_engine *e = new_engine();
    bee_request rq;
    bee_transfer *t;
    const char *p;
    size_t n, i, bad = 0;
    if (!CHECK(e)) return;
    rq = req("/big?n=100000");
    rq.max_body = 50000;
    t = start(e, &rq);
    if (CHECK(t)) {
        CHECK_EQ_U(run(e, t, 3000), BT_FAILED);
        CHECK_ERR(t, "body_too_large");
        CHECK(bee_transfer_head_done(t));
        CHECK_EQ_U(bee_transfer_status(t), 200);
        bee_transfer_body(t, &n);
        CHECK(n <= 50000);
        bee_transfer_free(t);
    }
    /* Exactly at the cap is fine. */
    rq = req("/big?n=50000");
    rq.max_body = 50000;
    t = start(e, &rq);
    if (CHECK(t)) {
        CHECK_EQ_U(run(e, t, 3000), BT_DONE);
        p = bee_transfer_body(t, &n);
        CHECK_EQ_U(n, 50000);
        for (i = 0; i < n; i++) bad += p[i] != big_byte(i);
        CHECK_EQ_U(bad, 0);
        bee_transfer_free(t);
    }
    engine_free(e);
}

TEST(max_event_cap) {
    bee_engine *e = new_engine();
    bee_request rq;
    bee_transfer *t;
    sse_event ev;
    if (!CHECK(e)) return;
    rq = req("/huge-event?n=100000");
    rq.stream = 1;
    rq.max_event = 65536;
    t = start(e, &rq);
    if (CHECK(t)) {
        CHECK_EQ_U(run(e, t, 3000), BT_FAILED);
        CHECK_ERR(t, "event_too_large");
        CHECK(bee_transfer_is_sse(t));
        CHECK_EQ_U(queued(t), 1);
        POP_EV(t, "message", "small", "");
        bee_transfer_free(t);
    }
    rq = req("/huge-event?n=100000");
    rq.stream = 1;
    rq.max_event = 200000;
    t = start(e, &rq);
    if (CHECK(t)) {
        CHECK_EQ_U(run(e, t, 3000), BT_DONE);
        CHECK_EQ_U(queued(t), 2);
        POP_EV(t, "message", "small", "");
        if (CHECK(evq_peek(bee_transfer_events(t), &ev))) CHECK_EQ_U(ev.data_len, 100000);
        bee_transfer_free(t);
    }
    engine_free(e);
}

TEST(head_too_large) {
    bee_engine *e = new_engine();
    bee_request rq;
    bee_transfer *t;
    if (!CHECK(e)) return;
    rq = req("/many-headers?n=80"); /* ~80 KiB of header lines */
    t = start(e, &rq);
    if (CHECK(t)) {
        CHECK_EQ_U(run(e, t, 3000), BT_FAILED);
        CHECK_ERR(t, "headers_too_large");
        bee_transfer_free(t);
    }
    rq = req("/many-headers?n=20");
    t = start(e, &rq);
    if (CHECK(t)) {
        CHECK_EQ_U(run(e, t, 3000), BT_DONE);
        HEADERS_HAVE(t, "Content-Length: 2");
        bee_transfer_free(t);
    }
    engine_free(e);
}

/* ------------------------------------------------------------------ */
/* Backpressure                                                         */

/* Pops and checks every queued /flood event; returns how many. */
static size_t drain_flood(bee_transfer *t, size_t *next, size_t *bad) {
    evq *q = bee_transfer_events(t);
    sse_event ev;
    char want[FLOOD_PAYLOAD + 32], id[32];
    size_t n = 0;
    while (evq_peek(q, &ev)) {
        size_t wl = flood_data(want, *next);
        size_t il = (size_t)sprintf(id, "%zu", *next);
        if (ev.kind != SSE_KIND_EVENT || ev.type_len != 7 || memcmp(ev.type, "message", 7) ||
            ev.data_len != wl || memcmp(ev.data, want, wl) || ev.id_len != il ||
            memcmp(ev.id, id, il)) {
            if (*bad < 3)
                fprintf(stderr, "     flood event %zu: got id %.*s data %.*s\n", *next,
                        (int)ev.id_len, ev.id, (int)(ev.data_len > 20 ? 20 : ev.data_len),
                        ev.data);
            (*bad)++;
        }
        evq_pop(q);
        (*next)++;
        n++;
    }
    return n;
}

TEST(backpressure_bounds_queue) {
    const size_t nev = 16000; /* ~3 MiB of events */
    const size_t queue_high = 4096;
    const long idle = 200;
    char path[64], tmp[FLOOD_PAYLOAD + 32];
    bee_engine *e = new_engine();
    bee_request rq;
    bee_transfer *t;
    size_t wire_min, evq_max, bound, maxq = 0, next = 0, bad = 0;
    uint64_t bytes_mid = 0, bytes_hold = 0;
    int64_t t0, end;
    const char *p;
    size_t n;
    char last[32];
    if (!CHECK(e)) return;
    /* One write callback gets at most CURL_MAX_WRITE_SIZE bytes; the queue
     * may exceed queue_high by the events parsed from one such chunk (plus
     * the event carried over from the previous one). */
    wire_min = strlen("id: 0\ndata: \n\n") + flood_data(tmp, 0);
    evq_max = 4 * sizeof(size_t) + 7 + 5 + flood_data(tmp, nev - 1);
    bound = queue_high + (CURL_MAX_WRITE_SIZE / wire_min + 2) * evq_max;
    snprintf(path, sizeof path, "/flood?n=%zu", nev);
    rq = req(path);
    rq.stream = 1;
    rq.queue_high = queue_high;
    rq.idle_timeout_ms = idle;
    t = start(e, &rq);
    if (!CHECK(t)) goto out;
    /* Hold: 600 ms (3 idle limits) without taking any event. */
    t0 = bee_now_ms();
    while (bee_now_ms() - t0 < 600 && !is_final(t)) {
        engine_step(e, 20);
        if (evq_bytes(bee_transfer_events(t)) > maxq) maxq = evq_bytes(bee_transfer_events(t));
        if (!bytes_mid && bee_now_ms() - t0 >= 300) bytes_mid = bee_transfer_bytes_received(t);
    }
    bytes_hold = bee_transfer_bytes_received(t);
    CHECK_EQ_U(bee_transfer_state(t), BT_HEADERS); /* not failed by the idle limit */
    CHECK_ERR(t, NULL);
    CHECK(queued(t) > 0);
    CHECK(maxq >= queue_high);
    CHECK(maxq <= bound);
    CHECK(bytes_mid > 0 && bytes_mid == bytes_hold); /* reading had stopped */
    CHECK(bytes_hold < nev * wire_min / 4);
    if (maxq > bound)
        fprintf(stderr, "     queue held %zu bytes, bound %zu\n", maxq, bound);
    /* Drain: every event, in order, intact; the queue stays bounded. */
    end = bee_now_ms() + 8000;
    while (bee_now_ms() < end) {
        size_t b = evq_bytes(bee_transfer_events(t));
        if (b > maxq) maxq = b;
        drain_flood(t, &next, &bad);
        bee_transfer_events_taken(t);
        b = evq_bytes(bee_transfer_events(t)); /* a held chunk may land in events_taken */
        if (b > maxq) maxq = b;
        if (is_final(t) && queued(t) == 0) break;
        engine_step(e, 20);
    }
    CHECK_EQ_U(bee_transfer_state(t), BT_DONE);
    CHECK_ERR(t, NULL);
    CHECK_EQ_U(next, nev);
    CHECK_EQ_U(bad, 0);
    CHECK(maxq <= bound);
    if (maxq > bound)
        fprintf(stderr, "     queue held %zu bytes, bound %zu\n", maxq, bound);
    p = bee_transfer_last_event_id(t, &n);
    snprintf(last, sizeof last, "%zu", nev - 1);
    CHECK_MEM(p, n, last, strlen(last));
    CHECK(!bee_transfer_sse_cut(t));
    bee_transfer_free(t);
out:
    engine_free(e);
}

/* The deadline still counts while a transfer is paused; freeing it then
 * drops the chunk libcurl holds. */
TEST(deadline_while_paused) {
    const int64_t limit = 300;
    bee_engine *e = new_engine();
    bee_request rq;
    bee_transfer *t;
    int64_t t0, el;
    if (!CHECK(e)) return;
    rq = req("/flood?n=16000");
    rq.stream = 1;
    rq.queue_high = 4096;
    rq.idle_timeout_ms = 100;
    t0 = bee_now_ms();
    rq.deadline_ms = t0 + limit;
    t = start(e, &rq);
    if (!CHECK(t)) goto out;
    CHECK_EQ_U(run(e, t, 3000), BT_FAILED);
    el = bee_now_ms() - t0;
    CHECK_ERR(t, "deadline"); /* not idle_timeout: it was paused */
    CHECK(el >= limit && el < limit + 1000);
    CHECK(queued(t) > 0);
    bee_transfer_free(t);
out:
    engine_free(e);
}

/* A chunk held back by backpressure is handed to the write callback inside
 * bee_transfer_events_taken (curl_easy_pause).  When that chunk breaks a
 * cap, the transfer must fail with the cap's code, as it does when the same
 * bytes arrive unpaused (max_event_cap), and at once.
 *
 * ENGINE BUG (src/engine.c, bee_transfer_events_taken): the result of
 * curl_easy_pause() is ignored.  libcurl 7.88 returns CURLE_WRITE_ERROR
 * there before re-arming the transfer's socket or timer (the socket was
 * dropped from the watch list while paused), so nothing drives the transfer
 * any more: it ends with "idle_timeout" (here after 400 ms) or "deadline",
 * or never when neither is set.  Fix: check the result and fail the
 * transfer there, e.g.
 *     if (curl_easy_pause(t->easy, CURLPAUSE_CONT) != CURLE_OK || t->write_error)
 *         fail(t, t->write_error ? t->write_error : "out_of_memory", ...);
 */
TEST(cap_broken_by_held_chunk) {
    bee_engine *e = new_engine();
    bee_request rq;
    bee_transfer *t;
    uint64_t last = 0;
    int64_t quiet_since, end, t_taken;
    size_t taken = 0;
    if (!CHECK(e)) return;
    rq = req("/fill-then-huge");
    rq.stream = 1;
    rq.queue_high = 4096;
    rq.max_event = 8192;
    rq.idle_timeout_ms = 400;
    t = start(e, &rq);
    if (!CHECK(t)) goto out;
    /* Take nothing until the bytes stop coming (paused on a held chunk)
     * and no timer is pending: a consumer busy elsewhere for a while. */
    quiet_since = bee_now_ms();
    end = quiet_since + 3000;
    while (!is_final(t) && bee_now_ms() < end &&
           (bee_now_ms() - quiet_since < 100 || engine_timeout_ms(e) >= 0)) {
        engine_step(e, 10);
        if (bee_transfer_bytes_received(t) != last) {
            last = bee_transfer_bytes_received(t);
            quiet_since = bee_now_ms();
        }
    }
    CHECK_EQ_U(bee_transfer_state(t), BT_HEADERS);
    CHECK(evq_bytes(bee_transfer_events(t)) >= 4096);
    while (evq_peek(bee_transfer_events(t), &(sse_event){0})) {
        evq_pop(bee_transfer_events(t));
        taken++;
    }
    CHECK_EQ_U(taken, 100);
    t_taken = bee_now_ms();
    bee_transfer_events_taken(t); /* delivers the held chunk: too large */
    CHECK_EQ_U(run(e, t, 3000), BT_FAILED);
    CHECK_ERR(t, "event_too_large");
    CHECK(bee_now_ms() - t_taken < 300); /* not at the 400 ms idle limit */
    bee_transfer_free(t);
out:
    engine_free(e);
}

/* ------------------------------------------------------------------ */
/* Progress reporting and outside loops                                 */

static int in_ids(const uint64_t *ids, size_t n, uint64_t id) {
    size_t i;
    for (i = 0; i < n; i++)
        if (ids[i] == id) return 1;
    return 0;
}

TEST(take_ready_reports_progress) {
    bee_engine *e = new_engine();
    bee_request rq;
    bee_transfer *a, *b, *c, *d;
    uint64_t ids[8], ida, idb;
    size_t n, i, reports_a = 0, reports_b = 0, strays = 0, dups = 0;
    int64_t end;
    if (!CHECK(e)) return;
    rq = req("/json");
    a = start(e, &rq);
    rq = req("/slow-sse?n=3&every=60");
    rq.stream = 1;
    b = start(e, &rq);
    if (!CHECK(a && b)) {
        engine_free(e);
        return;
    }
    ida = bee_transfer_id(a);
    idb = bee_transfer_id(b);
    CHECK(ida != idb);
    CHECK_EQ_U(engine_take_ready(e, ids, 8), 0); /* nothing happened yet */
    end = bee_now_ms() + 3000;
    while (!(is_final(a) && is_final(b)) && bee_now_ms() < end) {
        engine_step(e, 20);
        n = engine_take_ready(e, ids, 8);
        for (i = 0; i < n; i++) {
            if (ids[i] == ida) reports_a++;
            else if (ids[i] == idb) reports_b++;
            else strays++;
            if (in_ids(ids, i, ids[i])) dups++;
        }
        CHECK_EQ_U(engine_take_ready(e, ids, 8), 0); /* the list was cleared */
    }
    CHECK_EQ_U(bee_transfer_state(a), BT_DONE);
    CHECK_EQ_U(bee_transfer_state(b), BT_DONE);
    CHECK(reports_a >= 1);
    CHECK(reports_b >= 4); /* head, three events 60 ms apart, end */
    CHECK_EQ_U(strays, 0);
    CHECK_EQ_U(dups, 0);
    CHECK_EQ_U(queued(b), 3);
    /* Nothing left to report once everything ended. */
    engine_step(e, 30);
    CHECK_EQ_U(engine_take_ready(e, ids, 8), 0);
    bee_transfer_free(a);
    bee_transfer_free(b);

    /* max smaller than the list: the rest stays listed. */
    rq = req("/json");
    c = start(e, &rq);
    d = start(e, &rq);
    if (CHECK(c && d)) {
        end = bee_now_ms() + 3000;
        while (!(is_final(c) && is_final(d)) && bee_now_ms() < end) engine_step(e, 20);
        CHECK_EQ_U(engine_take_ready(e, ids, 1), 1);
        CHECK_EQ_U(engine_take_ready(e, ids + 1, 7), 1);
        CHECK(in_ids(ids, 2, bee_transfer_id(c)) && in_ids(ids, 2, bee_transfer_id(d)));
        CHECK_EQ_U(engine_take_ready(e, ids, 8), 0);
    }
    if (c) bee_transfer_free(c);
    if (d) bee_transfer_free(d);

    /* A freed transfer leaves the list. */
    rq = req("/json");
    c = start(e, &rq);
    if (CHECK(c)) {
        CHECK_EQ_U(run(e, c, 3000), BT_DONE);
        bee_transfer_free(c);
        CHECK_EQ_U(engine_take_ready(e, ids, 8), 0);
    }
    engine_free(e);
}

/* Drives engines with poll() over engine_pollfds / engine_timeout_ms /
 * engine_handle only, until t ends.  A wait the engines called unbounded
 * (-1) is cut at 1 s and counted in *stalls. */
static void outside_loop(bee_engine **es, size_t ne, bee_transfer *t, int max_ms, int *stalls,
                         size_t *max_fds) {
    int64_t end = bee_now_ms() + max_ms;
    *stalls = 0;
    while (!is_final(t) && bee_now_ms() < end) {
        struct pollfd fds[16];
        size_t counts[4], k, at = 0;
        long to = -1;
        int r, capped = 0;
        for (k = 0; k < ne; k++) {
            long tk = engine_timeout_ms(es[k]);
            counts[k] = engine_pollfds(es[k], fds + at, 16 / ne);
            CHECK_EQ_U(counts[k], engine_nsockets(es[k]));
            at += counts[k];
            if (tk >= 0 && (to < 0 || tk < to)) to = tk;
        }
        if (at > *max_fds) *max_fds = at;
        if (to < 0) {
            to = 1000;
            capped = 1;
        }
        r = poll(fds, (nfds_t)at, (int)to);
        if (r == 0 && capped) (*stalls)++;
        for (k = 0, at = 0; k < ne; k++) {
            engine_handle(es[k], fds + at, counts[k]);
            at += counts[k];
        }
    }
}

TEST(outside_poll_loop) {
    bee_engine *e1 = new_engine(), *e2 = new_engine();
    bee_engine *es[2];
    bee_request rq;
    bee_transfer *t, *u;
    int stalls;
    size_t max_fds = 0;
    int64_t t0, el;
    if (!CHECK(e1 && e2)) goto out;
    es[0] = e1;
    es[1] = e2;
    /* One stream to its end. */
    rq = req("/slow-sse?n=3&every=40");
    rq.stream = 1;
    t = start(e1, &rq);
    if (CHECK(t)) {
        outside_loop(es, 1, t, 3000, &stalls, &max_fds);
        CHECK_EQ_U(bee_transfer_state(t), BT_DONE);
        CHECK_EQ_U(stalls, 0);
        CHECK(max_fds >= 1);
        CHECK_EQ_U(queued(t), 3);
        POP_EV(t, "message", "tick 0", "0");
        POP_EV(t, "message", "tick 1", "1");
        POP_EV(t, "message", "tick 2", "2");
        CHECK_EQ_U(engine_active(e1), 0);
        bee_transfer_free(t);
    }
    /* Our own timer (idle) must show in engine_timeout_ms; two engines
     * waited on in one poll(). */
    rq = req("/stall-after-head");
    rq.stream = 1;
    rq.idle_timeout_ms = 150;
    t = start(e1, &rq);
    rq = req("/slow-sse?n=2&every=30");
    rq.stream = 1;
    u = start(e2, &rq);
    if (CHECK(t && u)) {
        t0 = bee_now_ms();
        outside_loop(es, 2, t, 3000, &stalls, &max_fds);
        el = bee_now_ms() - t0;
        CHECK_EQ_U(bee_transfer_state(t), BT_FAILED);
        CHECK_ERR(t, "idle_timeout");
        CHECK_EQ_U(stalls, 0);
        CHECK(el >= 150 && el < 150 + 800);
        CHECK_EQ_U(bee_transfer_state(u), BT_DONE); /* finished meanwhile */
        CHECK_EQ_U(queued(u), 2);
    }
    if (t) bee_transfer_free(t);
    if (u) bee_transfer_free(u);
out:
    engine_free(e1);
    engine_free(e2);
}

/* ------------------------------------------------------------------ */
/* Connections: cancel, reuse, engine_free                              */

TEST(cancel_closes_connection) {
    bee_engine *e = new_engine();
    bee_request rq;
    bee_transfer *t;
    int64_t end;
    int closed0 = srv_get(&srv.peer_closed);
    if (!CHECK(e)) return;
    rq = req("/cancel");
    rq.stream = 1;
    t = start(e, &rq);
    if (!CHECK(t)) goto out;
    end = bee_now_ms() + 3000;
    while (queued(t) == 0 && !is_final(t) && bee_now_ms() < end) engine_step(e, 20);
    CHECK_EQ_U(bee_transfer_state(t), BT_HEADERS);
    POP_EV(t, "message", "first", "");
    CHECK_EQ_U(engine_active(e), 1);
    CHECK(engine_nsockets(e) >= 1);
    bee_transfer_free(t);
    CHECK_EQ_U(engine_active(e), 0);
    CHECK_EQ_U(engine_nsockets(e), 0);
    engine_step(e, 10);
    CHECK(srv_wait_for(&srv.peer_closed, closed0 + 1, 2000));
    /* Cancelled before it ever ran. */
    rq = req("/json");
    t = start(e, &rq);
    if (CHECK(t)) {
        bee_transfer_free(t);
        CHECK_EQ_U(engine_step(e, 10), 0);
    }
out:
    engine_free(e);
}

TEST(connection_reused_after_done) {
    bee_engine *e = new_engine();
    bee_request rq;
    bee_transfer *t;
    int acc0 = srv_get(&srv.accepted), req0;
    int64_t end;
    if (!CHECK(e)) return;
    rq = req("/json?reuse=1");
    t = start(e, &rq);
    if (!CHECK(t)) goto out;
    CHECK_EQ_U(run(e, t, 3000), BT_DONE);
    CHECK(!bee_transfer_reused(t));
    bee_transfer_free(t);
    rq = req("/json?reuse=2");
    t = start(e, &rq);
    if (!CHECK(t)) goto out;
    CHECK_EQ_U(run(e, t, 3000), BT_DONE);
    CHECK(bee_transfer_reused(t));
    bee_transfer_free(t);
    CHECK_EQ_U(srv_get(&srv.accepted) - acc0, 1);
    pthread_mutex_lock(&srv.mu);
    CHECK_EQ_U(srv.last.conn_seq, 2);
    pthread_mutex_unlock(&srv.mu);

    /* A cancelled transfer's connection is not reused: it takes the pooled
     * one, is cancelled mid-request, and the next request connects anew. */
    req0 = srv_get(&srv.requests);
    rq = req("/stall-head");
    t = start(e, &rq);
    if (!CHECK(t)) goto out;
    end = bee_now_ms() + 3000;
    while (srv_get(&srv.requests) == req0 && bee_now_ms() < end) engine_step(e, 10);
    CHECK_EQ_U(srv_get(&srv.requests), req0 + 1);
    bee_transfer_free(t);
    rq = req("/json?reuse=3");
    t = start(e, &rq);
    if (!CHECK(t)) goto out;
    CHECK_EQ_U(run(e, t, 3000), BT_DONE);
    CHECK(!bee_transfer_reused(t));
    CHECK_EQ_U(srv_get(&srv.accepted) - acc0, 2);
    bee_transfer_free(t);
out:
    engine_free(e);
}

TEST(engine_free_with_transfers_attached) {
    bee_engine *e = new_engine();
    bee_request rq;
    bee_transfer *slot[4] = {NULL, NULL, NULL, NULL};
    int closed0 = srv_get(&srv.peer_closed), req0 = srv_get(&srv.requests), i;
    int64_t end;
    if (!CHECK(e)) return;
    rq = req("/json");
    slot[0] = start(e, &rq); /* will be done */
    rq = req("/stall-after-head");
    rq.stream = 1;
    slot[1] = start(e, &rq); /* streaming, silent */
    rq = req("/stall-head");
    slot[2] = start(e, &rq); /* waiting for a head */
    rq = req("/flood?n=4000");
    rq.stream = 1;
    rq.queue_high = 4096;
    slot[3] = start(e, &rq); /* paused, a chunk held */
    for (i = 0; i < 4; i++)
        if (CHECK(slot[i])) bee_transfer_set_owner(slot[i], &slot[i]);
    end = bee_now_ms() + 3000;
    while (bee_now_ms() < end &&
           !(slot[0] && is_final(slot[0]) && slot[1] &&
             bee_transfer_state(slot[1]) == BT_HEADERS && srv_get(&srv.requests) >= req0 + 4 &&
             slot[3] && evq_bytes(bee_transfer_events(slot[3])) >= 4096))
        engine_step(e, 10);
    engine_step(e, 50);
    if (slot[0]) CHECK_EQ_U(bee_transfer_state(slot[0]), BT_DONE);
    if (slot[1]) CHECK_EQ_U(bee_transfer_state(slot[1]), BT_HEADERS);
    if (slot[2]) CHECK_EQ_U(bee_transfer_state(slot[2]), BT_CONNECTING);
    if (slot[3]) CHECK_EQ_U(bee_transfer_state(slot[3]), BT_HEADERS);
    CHECK_EQ_U(engine_active(e), 3);
    engine_free(e);
    for (i = 0; i < 4; i++) CHECK(slot[i] == NULL);
    /* Both running transfers' connections were closed. */
    CHECK(srv_wait_for(&srv.peer_closed, closed0 + 2, 2000));
}

/* Many transfers at once: the socket table grows, and slots moved when
 * another socket is removed keep working (every fd listed is distinct and
 * open, and the survivors still get their bytes). */
TEST(many_transfers_socket_table) {
    enum { N = 20, NEV = 4 };
    bee_engine *e = new_engine();
    bee_request rq;
    bee_transfer *t[N];
    struct pollfd fds[N + 4];
    size_t i, j, k, n, live = 0, heads, closed_fds = 0, dup_fds = 0;
    int64_t end;
    if (!CHECK(e)) return;
    pthread_mutex_lock(&srv.mu);
    srv.gate = 0;
    pthread_mutex_unlock(&srv.mu);
    for (i = 0; i < N; i++) {
        rq = req("/gated?n=4");
        rq.stream = 1;
        t[i] = start(e, &rq);
        if (!CHECK(t[i])) {
            while (i > 0) bee_transfer_free(t[--i]);
            engine_free(e);
            return;
        }
    }
    end = bee_now_ms() + 3000;
    do {
        engine_step(e, 10);
        for (i = 0, heads = 0; i < N; i++) heads += bee_transfer_head_done(t[i]) != 0;
    } while (heads < N && bee_now_ms() < end);
    CHECK_EQ_U(heads, N);
    CHECK_EQ_U(engine_nsockets(e), N);
    CHECK_EQ_U(engine_active(e), N);
    /* Cancel every third, the first socket opened among them. */
    for (i = 0; i < N; i += 3) {
        CHECK(!is_final(t[i]));
        bee_transfer_free(t[i]);
        t[i] = NULL;
    }
    for (i = 0; i < N; i++) live += t[i] != NULL;
    CHECK_EQ_U(engine_active(e), live);
    CHECK_EQ_U(engine_nsockets(e), live);
    srv_bump(&srv.gate);
    end = bee_now_ms() + 4000;
    for (;;) {
        size_t open = 0;
        n = engine_pollfds(e, fds, N + 4);
        for (j = 0; j < n; j++) {
            closed_fds += fcntl(fds[j].fd, F_GETFD) == -1;
            for (k = 0; k < j; k++) dup_fds += fds[k].fd == fds[j].fd;
        }
        for (i = 0; i < N; i++) open += t[i] && !is_final(t[i]);
        if (!open || bee_now_ms() >= end) break;
        engine_step(e, 20);
    }
    CHECK_EQ_U(closed_fds, 0); /* engine_pollfds never lists a closed fd */
    CHECK_EQ_U(dup_fds, 0);
    for (i = 0; i < N; i++) {
        char want[32];
        if (!t[i]) continue;
        CHECK_EQ_U(bee_transfer_state(t[i]), BT_DONE);
        CHECK_EQ_U(queued(t[i]), NEV);
        for (k = 0; k < NEV; k++) {
            char id[8];
            snprintf(want, sizeof want, "tick %zu", k);
            snprintf(id, sizeof id, "%zu", k);
            POP_EV(t[i], "message", want, id);
        }
        bee_transfer_free(t[i]);
    }
    CHECK_EQ_U(engine_active(e), 0);
    engine_free(e);
}

/* ------------------------------------------------------------------ */
/* The epoll set (Linux) and the due time of our timers                 */

#ifdef __linux__
/* The interest an engine_pollfds entry asks for, as POLLIN|POLLOUT. */
static int want_bits(short events) { return events & (POLLIN | POLLOUT); }

/* Reads the epoll set behind engine_fd from /proc/self/fdinfo: up to max
 * (fd, interest as POLLIN|POLLOUT) pairs.  -1 when it cannot be read. */
static long epoll_set(int epfd, int *fds, int *bits, size_t max) {
    char path[64], line[512];
    FILE *f;
    long n = 0;
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", epfd);
    f = fopen(path, "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        int fd;
        unsigned ev;
        if (sscanf(line, "tfd: %d events: %x", &fd, &ev) != 2) continue;
        if ((size_t)n < max) {
            fds[n] = fd;
            bits[n] = ((ev & EPOLLIN) ? POLLIN : 0) | ((ev & EPOLLOUT) ? POLLOUT : 0);
        }
        n++;
    }
    fclose(f);
    return n;
}
#endif

/* 1 when the engine's epoll set holds exactly the sockets engine_pollfds
 * lists, with the same interest (or the engine has no epoll set). */
static int mirror_ok(bee_engine *e, int line) {
#ifdef __linux__
    enum { MAXS = 256 };
    struct pollfd pf[MAXS];
    int fds[MAXS], bits[MAXS];
    size_t n, i, j;
    long m;
    int efd = engine_fd(e), ok = 1;
    if (efd < 0) return 1;
    n = engine_pollfds(e, pf, MAXS);
    m = epoll_set(efd, fds, bits, MAXS);
    if (!harness_check(m >= 0, __FILE__, line, "epoll fdinfo readable")) return 0;
    if (!harness_check((size_t)m == n, __FILE__, line, "epoll set as large as the socket list")) {
        fprintf(stderr, "     epoll set %ld, sockets %zu\n", m, n);
        ok = 0;
    }
    for (i = 0; i < n && i < (size_t)m; i++) {
        for (j = 0; j < (size_t)m; j++)
            if (fds[j] == pf[i].fd) break;
        if (!harness_check(j < (size_t)m && bits[j] == want_bits(pf[i].events), __FILE__, line,
                           "socket in the epoll set with its interest")) {
            fprintf(stderr, "     fd %d wants %d, set has %d\n", pf[i].fd, want_bits(pf[i].events),
                    j < (size_t)m ? bits[j] : -1);
            ok = 0;
        }
    }
    return ok;
#else
    (void)e;
    (void)line;
    return 1;
#endif
}
#define MIRROR_OK(e) mirror_ok((e), __LINE__)

/* The lowest free descriptor number (what the next socket will get). */
static int next_fd(void) {
    int fd = dup(0), r = fd;
    if (fd >= 0) close(fd);
    return r;
}

TEST(engine_fd_lifecycle) {
    int before = next_fd(), i;
    bee_engine *e = new_engine();
    if (!CHECK(e)) return;
#if defined(__linux__) && !defined(BEE_NO_EPOLL)
    CHECK(engine_fd(e) >= 0);
    CHECK(fcntl(engine_fd(e), F_GETFD) & FD_CLOEXEC);
#endif
    if (engine_fd(e) >= 0) {
        struct pollfd p;
        p.fd = engine_fd(e);
        p.events = POLLIN;
        p.revents = 0;
        CHECK_EQ_U(poll(&p, 1, 0), 0); /* nothing to report yet */
    }
    MIRROR_OK(e);
    engine_free(e);
    /* engine_free closes it: 50 more engines leak no descriptor. */
    for (i = 0; i < 50; i++) {
        e = new_engine();
        if (!CHECK(e)) break;
        engine_free(e);
    }
    CHECK_EQ_U(next_fd(), before);
}

/* Each answer closes its connection, so libcurl closes the socket and the
 * next transfer's socket gets the same descriptor number back: the set
 * must follow (registration of the new socket, none left of the old).  A
 * lost registration would stall a step for its whole timeout. */
TEST(fd_closed_and_reused_between_steps) {
    enum { ROUNDS = 12 };
    bee_engine *e = new_engine();
    bee_request rq;
    int seen[ROUNDS], i, reused = 0, acc0 = srv_get(&srv.accepted);
    int64_t t0, el, worst = 0;
    if (!CHECK(e)) return;
    for (i = 0; i < ROUNDS; i++) {
        bee_transfer *t;
        int64_t end;
        struct pollfd pf[4];
        seen[i] = -1;
        rq = req(i % 2 ? "/json-close?odd" : "/json-close");
        t = start(e, &rq);
        if (!CHECK(t)) break;
        t0 = bee_now_ms();
        end = t0 + 3000;
        while (!is_final(t) && bee_now_ms() < end) {
            engine_step(e, 1000); /* a stall would show as ~1 s */
            if (engine_pollfds(e, pf, 4) == 1) seen[i] = pf[0].fd;
            MIRROR_OK(e);
        }
        el = bee_now_ms() - t0;
        if (el > worst) worst = el;
        CHECK_EQ_U(bee_transfer_state(t), BT_DONE);
        CHECK(!bee_transfer_reused(t));
        bee_transfer_free(t);
        engine_step(e, 0); /* libcurl closes the connection */
        MIRROR_OK(e);
        if (i > 0 && seen[i] >= 0 && seen[i] == seen[i - 1]) reused++;
    }
    CHECK_EQ_U(srv_get(&srv.accepted) - acc0, ROUNDS);
    CHECK(reused >= ROUNDS / 2); /* the numbers did come back */
    CHECK(worst < 800);
    if (worst >= 800 || reused < ROUNDS / 2)
        fprintf(stderr, "     slowest round %lld ms, %d of %d reused the fd\n", (long long)worst,
                reused, ROUNDS - 1);
    engine_free(e);
}

/* A registration gone from the set behind the engine's back (as when the
 * descriptor was closed and its number reopened): the next change of
 * interest re-adds it (MOD fails with ENOENT, ADD then).  A registration
 * the engine did not make (EEXIST on ADD) is taken over with MOD. */
TEST(epoll_set_repairs_itself) {
#if defined(__linux__) && !defined(BEE_NO_EPOLL)
    const size_t body_len = 8u << 20;
    char *body = malloc(body_len);
    bee_engine *e = new_engine();
    bee_request rq;
    bee_transfer *t = NULL;
    struct pollfd pf[4];
    int64_t end;
    int fd = -1, efd;
    size_t n;
    if (!CHECK(e && body)) goto out;
    efd = engine_fd(e);
    /* (1) ENOENT: an 8 MiB POST is still sending (interest OUT) when its
     * registration is dropped; one round driven by poll() moves it on. */
    memset(body, 'b', body_len);
    rq = req("/json");
    rq.method = "POST";
    rq.body = body;
    rq.body_len = body_len;
    t = start(e, &rq);
    if (!CHECK(t)) goto out;
    end = bee_now_ms() + 3000;
    for (;;) {
        engine_step(e, 0);
        n = engine_pollfds(e, pf, 4);
        if ((n == 1 && (pf[0].events & POLLOUT)) || is_final(t) || bee_now_ms() >= end) break;
        sleep_ms(1);
    }
    if (!CHECK(n == 1 && (pf[0].events & POLLOUT))) goto out;
    fd = pf[0].fd;
    CHECK_EQ_U(epoll_ctl(efd, EPOLL_CTL_DEL, fd, NULL), 0);
    end = bee_now_ms() + 3000;
    while (!is_final(t) && bee_now_ms() < end) {
        /* An outside loop until the request is sent (interest IN). */
        n = engine_pollfds(e, pf, 4);
        if (n == 1 && !(pf[0].events & POLLOUT)) break;
        poll(pf, (nfds_t)n, 50);
        engine_handle(e, pf, n);
    }
    MIRROR_OK(e); /* re-added */
    CHECK_EQ_U(engine_fd(e), efd); /* and not by giving up on epoll */
    end = bee_now_ms() + 3000;
    while (!is_final(t) && bee_now_ms() < end) engine_step(e, 1000);
    CHECK_EQ_U(bee_transfer_state(t), BT_DONE);
    CHECK_EQ_U(bee_transfer_status(t), 200);
    bee_transfer_free(t);
    t = NULL;
    MIRROR_OK(e);

    /* (2) EEXIST: a stream paused by backpressure has left the set; its
     * socket is put back in behind the engine's back, then the consumer
     * takes the events and libcurl adds the socket again. */
    rq = req("/flood?n=4000&delay=100"); /* a while with the socket listed */
    rq.stream = 1;
    rq.queue_high = 4096;
    t = start(e, &rq);
    if (!CHECK(t)) goto out;
    fd = -1;
    end = bee_now_ms() + 3000;
    while (!is_final(t) && bee_now_ms() < end) {
        engine_step(e, 10);
        if (engine_pollfds(e, pf, 4) == 1) fd = pf[0].fd;
        if (fd >= 0 && engine_nsockets(e) == 0 && evq_bytes(bee_transfer_events(t)) >= 4096) break;
    }
    if (!CHECK(fd >= 0 && engine_nsockets(e) == 0)) {
        fprintf(stderr, "     fd %d, %zu sockets, %zu bytes queued, state %d\n", fd,
                engine_nsockets(e), evq_bytes(bee_transfer_events(t)), (int)bee_transfer_state(t));
        goto out;
    }
    {
        struct epoll_event ev;
        memset(&ev, 0, sizeof ev);
        ev.events = EPOLLOUT; /* stale interest: not readable-only */
        ev.data.fd = fd;
        CHECK_EQ_U(epoll_ctl(efd, EPOLL_CTL_ADD, fd, &ev), 0);
    }
    {
        size_t next = 0, bad = 0;
        end = bee_now_ms() + 8000;
        while (bee_now_ms() < end) {
            evq *q = bee_transfer_events(t);
            while (evq_peek(q, &(sse_event){0})) {
                evq_pop(q);
                next++;
            }
            bee_transfer_events_taken(t);
            if (engine_nsockets(e) == 1) MIRROR_OK(e); /* taken over with its interest */
            if (is_final(t) && queued(t) == 0) break;
            engine_step(e, 1000);
        }
        CHECK_EQ_U(bee_transfer_state(t), BT_DONE);
        CHECK_EQ_U(next, 4000);
        CHECK_EQ_U(bad, 0);
    }
    MIRROR_OK(e);
    CHECK_EQ_U(engine_fd(e), efd);
out:
    if (t) bee_transfer_free(t);
    engine_free(e);
    free(body);
#endif
}

/* Many transfers, staggered deadlines started in shuffled order and idle
 * timers: each fails not before its time, in order; the engine never plans
 * to sleep past the next one (engine_timeout_ms) and fails it in the step
 * that begins once it is due. */
TEST(staggered_timers_fire_in_order) {
    enum { ND = 30, NI = 10 };
    const int64_t first = 150, gap = 25;
    bee_engine *e = new_engine();
    bee_request rq;
    bee_transfer *t[ND + NI];
    int64_t due[ND + NI], failed_at[ND + NI], head_at[ND + NI], idle[ND + NI], t0, end, late = 0;
    int order[ND], i, j, steps = 0, early = 0, wrong_code = 0, out_of_order = 0, overshoot = 0;
    int missed = 0;
    size_t nfailed = 0;
    if (!CHECK(e)) return;
    for (i = 0; i < ND; i++) order[i] = i;
    for (i = ND - 1; i > 0; i--) { /* a fixed shuffle */
        int k = (i * 7 + 3) % (i + 1), x = order[i];
        order[i] = order[k];
        order[k] = x;
    }
    t0 = bee_now_ms();
    for (i = 0; i < ND; i++) {
        int k = order[i];
        rq = req("/stall-head");
        due[k] = t0 + first + gap * k;
        rq.deadline_ms = due[k];
        rq.idle_timeout_ms = 50; /* never counts: no head */
        t[k] = start(e, &rq);
        failed_at[k] = 0;
        if (!CHECK(t[k])) {
            for (j = 0; j < i; j++) bee_transfer_free(t[order[j]]);
            engine_free(e);
            return;
        }
    }
    for (i = ND; i < ND + NI; i++) {
        rq = req("/stall-after-head");
        rq.stream = 1;
        idle[i] = first + gap * (i - ND) + 12;
        rq.idle_timeout_ms = (long)idle[i];
        rq.deadline_ms = t0 + 60000; /* far off */
        t[i] = start(e, &rq);
        failed_at[i] = head_at[i] = due[i] = 0;
        if (!CHECK(t[i])) {
            while (i > 0) bee_transfer_free(t[--i]);
            engine_free(e);
            return;
        }
    }
    end = t0 + 5000;
    while (nfailed < ND + NI && bee_now_ms() < end) {
        int64_t before = bee_now_ms(), now, next_due = INT64_MAX;
        long to = engine_timeout_ms(e);
        for (i = 0; i < ND + NI; i++)
            if (!failed_at[i] && due[i] && due[i] < next_due) next_due = due[i];
        /* Never later than the next timer. */
        if (next_due != INT64_MAX && before < next_due && (to < 0 || to > next_due - before))
            overshoot++;
        engine_step(e, 2000);
        steps++;
        now = bee_now_ms();
        for (i = 0; i < ND + NI; i++) {
            if (i >= ND && !head_at[i] && bee_transfer_head_done(t[i])) {
                /* The head came during this step: after `before`, by `now`
                 * (its idle timer is due by now + idle). */
                head_at[i] = before;
                due[i] = now + idle[i];
            }
            if (!failed_at[i] && is_final(t[i])) {
                const char *code = bee_transfer_error(t[i], NULL);
                failed_at[i] = now;
                nfailed++;
                if (!code || strcmp(code, i < ND ? "deadline" : "idle_timeout") != 0) wrong_code++;
                if (i < ND && now < due[i]) early++;
                if (due[i] && now - due[i] > late) late = now - due[i];
            }
            /* Due before this step began: the step must have failed it
             * (whatever the time steps take, under valgrind say). */
            if (!failed_at[i] && due[i] && before >= due[i]) missed++;
        }
    }
    CHECK_EQ_U(nfailed, ND + NI);
    CHECK_EQ_U(wrong_code, 0);
    CHECK_EQ_U(early, 0);
    CHECK_EQ_U(overshoot, 0); /* never slept past the next timer */
    CHECK_EQ_U(missed, 0);    /* and failed it on waking */
    for (i = 1; i < ND; i++) out_of_order += failed_at[i] < failed_at[i - 1];
    CHECK_EQ_U(out_of_order, 0);
    /* Idle timers count from each head. */
    for (i = ND; i < ND + NI; i++) {
        CHECK(head_at[i] > 0);
        CHECK(failed_at[i] - head_at[i] >= idle[i]);
    }
    /* Slept between timers: about one wakeup per due time (40), plus the
     * connections' own events, not a busy loop. */
    CHECK(steps < 400);
    if (missed || steps >= 400 || overshoot)
        fprintf(stderr, "     latest %lld ms late, %d steps, %d overshoots, %d missed\n",
                (long long)late, steps, overshoot, missed);
    CHECK_EQ_U(engine_active(e), 0);
    CHECK(engine_timeout_ms(e) < 0); /* nothing left to time */
    for (i = 0; i < ND + NI; i++) bee_transfer_free(t[i]);
    engine_free(e);
}

/* The idle timer of a stream stops while backpressure pauses it and runs
 * again from the moment the consumer takes events. */
TEST(idle_timeout_after_unpause) {
    const long idle = 150;
    bee_engine *e = new_engine();
    bee_request rq;
    bee_transfer *t;
    int64_t t0, end, t_taken, el;
    size_t taken = 0;
    if (!CHECK(e)) return;
    rq = req("/fill-then-stall");
    rq.stream = 1;
    rq.queue_high = 4096;
    rq.idle_timeout_ms = idle;
    t = start(e, &rq);
    if (!CHECK(t)) goto out;
    /* Take nothing for 3 idle limits: paused on the held event, not failed. */
    t0 = bee_now_ms();
    while (bee_now_ms() - t0 < 3 * idle && !is_final(t)) engine_step(e, 20);
    CHECK_EQ_U(bee_transfer_state(t), BT_HEADERS);
    CHECK_EQ_U(queued(t), 100);
    CHECK(engine_timeout_ms(e) < 0); /* paused: no timer runs */
    while (evq_peek(bee_transfer_events(t), &(sse_event){0})) {
        evq_pop(bee_transfer_events(t));
        taken++;
    }
    CHECK_EQ_U(taken, 100);
    t_taken = bee_now_ms();
    bee_transfer_events_taken(t); /* the held event lands; then silence */
    CHECK(engine_timeout_ms(e) >= 0);
    end = t_taken + 3000;
    while (!is_final(t) && bee_now_ms() < end) engine_step(e, 1000);
    el = bee_now_ms() - t_taken;
    CHECK_EQ_U(bee_transfer_state(t), BT_FAILED);
    CHECK_ERR(t, "idle_timeout");
    CHECK(el >= idle - 5 && el < idle + 500);
    if (el < idle - 5 || el >= idle + 500) fprintf(stderr, "     idle fired %lld ms after\n", (long long)el);
    POP_EV(t, "message", "held", "held");
    bee_transfer_free(t);
out:
    engine_free(e);
}

/* core.wait's way over several engines: poll() their engine_fd (or their
 * sockets where there is none), then engine_step(e, 0) on each. */
TEST(outside_loop_over_engine_fds) {
    bee_engine *es[2];
    bee_request rq;
    bee_transfer *t, *u;
    int64_t t0, end, el;
    int wakeups = 0, k;
    es[0] = new_engine();
    es[1] = new_engine();
    if (!CHECK(es[0] && es[1])) goto out;
    rq = req("/stall-after-head");
    rq.stream = 1;
    rq.idle_timeout_ms = 200;
    t = start(es[0], &rq);
    rq = req("/slow-sse?n=4&every=30");
    rq.stream = 1;
    u = start(es[1], &rq);
    if (!CHECK(t && u)) goto free_tu;
    t0 = bee_now_ms();
    end = t0 + 3000;
    while (!(is_final(t) && is_final(u)) && bee_now_ms() < end) {
        struct pollfd fds[64];
        size_t counts[2], at = 0;
        long to = 1000;
        for (k = 0; k < 2; k++) {
            long tk = engine_timeout_ms(es[k]);
            if (tk >= 0 && tk < to) to = tk;
            if (engine_fd(es[k]) >= 0) {
                fds[at].fd = engine_fd(es[k]);
                fds[at].events = POLLIN;
                fds[at].revents = 0;
                counts[k] = 1;
            } else {
                counts[k] = engine_pollfds(es[k], fds + at, 32);
            }
            at += counts[k];
        }
        poll(fds, (nfds_t)at, (int)to);
        wakeups++;
        for (k = 0, at = 0; k < 2; k++) {
            if (engine_fd(es[k]) >= 0) engine_step(es[k], 0);
            else engine_handle(es[k], fds + at, counts[k]);
            at += counts[k];
            MIRROR_OK(es[k]);
        }
    }
    el = bee_now_ms() - t0;
    CHECK_EQ_U(bee_transfer_state(u), BT_DONE);
    CHECK_EQ_U(queued(u), 4);
    CHECK_EQ_U(bee_transfer_state(t), BT_FAILED);
    CHECK_ERR(t, "idle_timeout");
    CHECK(el >= 200 && el < 200 + 800);
    CHECK(wakeups < 100);
free_tu:
    if (t) bee_transfer_free(t);
    if (u) bee_transfer_free(u);
out:
    engine_free(es[0]);
    engine_free(es[1]);
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    if (server_start()) {
        perror("test server");
        return 2;
    }
    /* Held across the tests so each engine_new/engine_free pair does not
     * set libcurl (and its TLS library) up from scratch. */
    curl_global_init(CURL_GLOBAL_DEFAULT);

    RUN(json_response_and_request);
    RUN(status_429_and_1xx);
    RUN(sse_stream_events);
    RUN(sse_stream_with_comments);
    RUN(sse_not_parsed_unless_2xx_and_asked);
    RUN(stream_cut);
    RUN(idle_timeout_after_head);
    RUN(heartbeats_keep_stream_alive);
    RUN(deadline_without_answer);
    RUN(connect_failed_on_closed_port);
    RUN(start_errors_and_bad_urls);
    RUN(max_body_cap);
    RUN(max_event_cap);
    RUN(head_too_large);
    RUN(backpressure_bounds_queue);
    RUN(deadline_while_paused);
    RUN(cap_broken_by_held_chunk);
    RUN(take_ready_reports_progress);
    RUN(many_transfers_socket_table);
    RUN(outside_poll_loop);
    RUN(cancel_closes_connection);
    RUN(connection_reused_after_done);
    RUN(engine_free_with_transfers_attached);
    RUN(engine_fd_lifecycle);
    RUN(fd_closed_and_reused_between_steps);
    RUN(epoll_set_repairs_itself);
    RUN(staggered_timers_fire_in_order);
    RUN(idle_timeout_after_unpause);
    RUN(outside_loop_over_engine_fds);

    curl_global_cleanup();
    server_stop();
    return harness_done();
}
