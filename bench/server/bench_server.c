/*
 * bench-server: a small, fast stand-in for the BeeOS agent API, for the
 * agent API benchmarks (`make bench-api`).  It answers the wire of
 * docs/protocol.md and nothing more:
 *
 *   POST /api/v1/agents/{id}/messages, Authorization: Bearer <token>
 *     Accept: application/json   -> 200 {"message_id","in_reply_to","context_id","content"}
 *     Accept: text/event-stream  -> 200 chunked SSE: N deltas
 *         event: delta\nid: k\ndata: {"text":"tok "}\n\n
 *       then `event: done` with the reply object (without "content", so a
 *       100 MiB reply is not repeated in one event: the SDK then builds
 *       reply.text from the deltas, as documented).
 *
 * Knobs ride in the request body's metadata, as for the bundled mock:
 *   "mock_events":"N"   number of deltas (default 100000)
 *   "mock_text":"..."   text of each delta, copied verbatim (JSON-escaped)
 *                       from the request (default "tok ")
 *   "mock_size":"N"     instead of mock_text: a text of N 'x' bytes
 *
 * One thread, epoll, non-blocking sockets, HTTP/1.1 keep-alive (pipelining
 * works), TCP_NODELAY.  Stream bodies are generated into one reused buffer,
 * ~64 KiB per HTTP chunk, from a per-request pre-built event tail; only the
 * id digits change per event.  Response heads are pre-built strings.
 *
 *   bench_server [--port P] [--token T]
 * prints "bench-server listening on http://127.0.0.1:PORT" and serves until
 * killed.  --port 0 (the default) takes a free port.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_HEAD (64 * 1024)
#define MAX_BODY (4 * 1024 * 1024)
#define CHUNK_TARGET (64 * 1024)
#define HDR_ROOM 16 /* room before a chunk's payload for "%x\r\n" */

typedef struct {
    char *p;
    size_t len, cap;
} buf;

static void buf_reserve(buf *b, size_t extra) {
    if (b->cap - b->len >= extra) return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < extra) cap *= 2;
    char *n = realloc(b->p, cap);
    if (!n) {
        perror("realloc");
        exit(1);
    }
    b->p = n;
    b->cap = cap;
}

static void buf_add(buf *b, const void *s, size_t n) {
    buf_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void buf_adds(buf *b, const char *s) { buf_add(b, s, strlen(s)); }

typedef struct {
    int fd;
    buf in;          /* request bytes not yet consumed */
    buf out;         /* response bytes not yet sent: out.p[off..len) */
    size_t off;
    int want_out;    /* EPOLLOUT registered */
    int close_after; /* Connection: close */
    int continued;   /* "100 Continue" sent for the request being read */
    /* An unfinished stream. */
    int streaming;
    uint64_t next_id, last_id;
    buf tail;        /* "\ndata: {...}\n\n" of every delta */
    buf done;        /* the done event */
} conn;

static const char *token = "bench-token";
static int epfd;
static uint64_t req_seq;

static void set_events(conn *c, int out) {
    struct epoll_event ev;
    if (out == c->want_out) return;
    c->want_out = out;
    ev.events = EPOLLIN | (out ? EPOLLOUT : 0);
    ev.data.ptr = c;
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_free(conn *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in.p);
    free(c->out.p);
    free(c->tail.p);
    free(c->done.p);
    free(c);
}

static char *utoa(char *end, uint64_t v) { /* writes backwards, returns start */
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

/* The raw (still JSON-escaped) string value of "key":"..." in body, or NULL. */
static const char *json_raw_string(const char *body, size_t n, const char *key, size_t *len) {
    char pat[64];
    int pl = snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *p = memmem(body, n, pat, (size_t)pl), *end = body + n;
    if (!p) return NULL;
    p += pl;
    while (p < end && (*p == ' ' || *p == ':' || *p == '\t')) p++;
    if (p >= end || *p != '"') return NULL;
    const char *v = ++p;
    while (p < end && *p != '"') p += (*p == '\\') ? 2 : 1;
    if (p >= end) return NULL;
    *len = (size_t)(p - v);
    return v;
}

static uint64_t knob(const char *body, size_t n, const char *key, uint64_t def) {
    size_t len;
    const char *v = json_raw_string(body, n, key, &len);
    if (!v || len == 0 || len > 18) return def;
    uint64_t r = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9') return def;
        r = r * 10 + (uint64_t)(v[i] - '0');
    }
    return r;
}

static void error_reply(conn *c, int status, const char *reason, const char *code) {
    char body[256], head[256];
    int bl = snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", code, reason);
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                      "X-Request-Id: req_%llu\r\n\r\n",
                      status, reason, bl, (unsigned long long)++req_seq);
    buf_add(&c->out, head, (size_t)hl);
    buf_add(&c->out, body, (size_t)bl);
}

/* Appends the next HTTP chunk of the stream (or its end) to c->out. */
static void gen_chunk(conn *c) {
    char num[24];
    buf *o = &c->out;
    size_t start, payload;
    buf_reserve(o, HDR_ROOM + CHUNK_TARGET + c->tail.len + 64);
    start = o->len;
    o->len += HDR_ROOM;
    payload = o->len;
    while (c->next_id <= c->last_id && o->len - payload < CHUNK_TARGET) {
        char *s = utoa(num + sizeof num, c->next_id++);
        size_t nl = (size_t)(num + sizeof num - s);
        buf_reserve(o, 17 + nl + c->tail.len);
        memcpy(o->p + o->len, "event: delta\nid: ", 17);
        o->len += 17;
        memcpy(o->p + o->len, s, nl);
        o->len += nl;
        memcpy(o->p + o->len, c->tail.p, c->tail.len);
        o->len += c->tail.len;
    }
    if (c->next_id > c->last_id) {
        buf_reserve(o, c->done.len + 8);
        memcpy(o->p + o->len, c->done.p, c->done.len);
        o->len += c->done.len;
        c->streaming = 0;
    }
    /* "%x\r\n" right before the payload; the room in front is skipped. */
    char hdr[HDR_ROOM];
    int hl = snprintf(hdr, sizeof hdr, "%zx\r\n", o->len - payload);
    memcpy(o->p + payload - hl, hdr, (size_t)hl);
    if (start == c->off && start == 0) {
        c->off = payload - (size_t)hl;
    } else {
        /* Bytes already queued before this chunk: close the gap. */
        memmove(o->p + start, o->p + payload - hl, o->len - (payload - hl));
        o->len -= HDR_ROOM - (size_t)hl;
    }
    buf_add(o, "\r\n", 2);
    if (!c->streaming) buf_add(o, "0\r\n\r\n", 5);
}

/* Handles one complete request [c->in.p, c->in.p + total). */
static void handle_request(conn *c, const char *head, size_t head_len, const char *body, size_t body_len,
                           int is_sse, const char *auth, size_t auth_len, const char *path, size_t path_len) {
    static const char prefix[] = "/api/v1/agents/", suffix[] = "/messages";
    if (path_len <= sizeof prefix - 1 + sizeof suffix - 1 || memcmp(path, prefix, sizeof prefix - 1) ||
        memcmp(path + path_len - (sizeof suffix - 1), suffix, sizeof suffix - 1)) {
        error_reply(c, 404, "Not Found", "not_found");
        return;
    }
    if (head_len < 4 || memcmp(head, "POST", 4) != 0) {
        error_reply(c, 405, "Method Not Allowed", "method_not_allowed");
        return;
    }
    size_t tl = strlen(token);
    if (!auth || auth_len != 7 + tl || strncasecmp(auth, "Bearer ", 7) || memcmp(auth + 7, token, tl)) {
        error_reply(c, 401, "Unauthorized", "unauthorized");
        return;
    }
    size_t mlen, klen = 0;
    const char *msg = json_raw_string(body, body_len, "message", &mlen);
    if (!msg || mlen == 0) {
        error_reply(c, 400, "Bad Request", "bad_request");
        return;
    }
    const char *key = json_raw_string(body, body_len, "idempotency_key", &klen);
    char ids[96];
    unsigned long long n = ++req_seq;
    if (!is_sse) {
        char head_out[256];
        buf b = {0};
        int il = snprintf(ids, sizeof ids, "{\"message_id\":\"msg_%llu\",\"in_reply_to\":\"", n);
        buf_add(&b, ids, (size_t)il);
        buf_add(&b, key ? key : "", klen);
        buf_adds(&b, "\",\"context_id\":\"ctx_1\",\"content\":\"echo: ");
        buf_add(&b, msg, mlen);
        buf_adds(&b, "\"}");
        int hl = snprintf(head_out, sizeof head_out,
                          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                          "X-Request-Id: req_%llu\r\n\r\n",
                          b.len, n);
        buf_add(&c->out, head_out, (size_t)hl);
        buf_add(&c->out, b.p, b.len);
        free(b.p);
        return;
    }
    uint64_t events = knob(body, body_len, "mock_events", 100000);
    uint64_t size = knob(body, body_len, "mock_size", 0);
    size_t text_len;
    const char *text = json_raw_string(body, body_len, "mock_text", &text_len);
    c->tail.len = 0;
    buf_adds(&c->tail, "\ndata: {\"text\":\"");
    if (size) {
        buf_reserve(&c->tail, size);
        memset(c->tail.p + c->tail.len, 'x', size);
        c->tail.len += size;
    } else if (text) {
        buf_add(&c->tail, text, text_len);
    } else {
        buf_adds(&c->tail, "tok ");
    }
    buf_adds(&c->tail, "\"}\n\n");
    c->done.len = 0;
    int il = snprintf(ids, sizeof ids, "event: done\ndata: {\"message_id\":\"msg_%llu\",\"in_reply_to\":\"", n);
    buf_add(&c->done, ids, (size_t)il);
    buf_add(&c->done, key ? key : "", klen);
    buf_adds(&c->done, "\",\"context_id\":\"ctx_1\"}\n\n");
    char head_out[256];
    int hl = snprintf(head_out, sizeof head_out,
                      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                      "Transfer-Encoding: chunked\r\nX-Request-Id: req_%llu\r\n\r\n",
                      n);
    buf_add(&c->out, head_out, (size_t)hl);
    c->streaming = 1;
    c->next_id = 1;
    c->last_id = events;
}

static const char *header_value(const char *head, size_t len, const char *name, size_t *vlen) {
    size_t nl = strlen(name);
    const char *p = memchr(head, '\n', len), *end = head + len;
    while (p && p + 1 < end) {
        const char *line = p + 1, *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol) break;
        if ((size_t)(eol - line) > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t')) v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ')) ve--;
            *vlen = (size_t)(ve - v);
            return v;
        }
        p = eol;
    }
    return NULL;
}

/* Parses and answers every complete request in c->in while no stream is
 * in progress.  Returns -1 when the connection must close now. */
static int process_input(conn *c) {
    while (!c->streaming && !c->close_after) {
        char *h = c->in.p;
        size_t have = c->in.len;
        char *eoh = have ? memmem(h, have, "\r\n\r\n", 4) : NULL;
        if (!eoh) {
            if (have > MAX_HEAD) return -1;
            return 0;
        }
        size_t head_len = (size_t)(eoh - h) + 4, vlen, clen = 0;
        const char *v = header_value(h, head_len, "content-length", &vlen);
        if (v) {
            for (size_t i = 0; i < vlen; i++) clen = clen * 10 + (size_t)(v[i] - '0');
            if (clen > MAX_BODY) return -1;
        }
        if (have < head_len + clen) {
            v = header_value(h, head_len, "expect", &vlen);
            if (v && vlen == 12 && strncasecmp(v, "100-continue", 12) == 0 && !c->continued) {
                c->continued = 1;
                buf_adds(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
            }
            return 0;
        }
        const char *sp1 = memchr(h, ' ', head_len), *sp2 = sp1 ? memchr(sp1 + 1, ' ', head_len - (size_t)(sp1 + 1 - h)) : NULL;
        if (!sp2) return -1;
        size_t alen = 0;
        const char *auth = header_value(h, head_len, "authorization", &alen);
        const char *acc = header_value(h, head_len, "accept", &vlen);
        int is_sse = acc && memmem(acc, vlen, "text/event-stream", 17) != NULL;
        v = header_value(h, head_len, "connection", &vlen);
        if (v && vlen == 5 && strncasecmp(v, "close", 5) == 0) c->close_after = 1;
        c->continued = 0;
        handle_request(c, h, head_len, h + head_len, clen, is_sse, auth, alen, sp1 + 1, (size_t)(sp2 - sp1 - 1));
        memmove(c->in.p, c->in.p + head_len + clen, have - head_len - clen);
        c->in.len = have - head_len - clen;
    }
    return 0;
}

/* Sends what it can.  Returns -1 when the connection is gone or done. */
static int flush_out(conn *c) {
    for (;;) {
        if (c->off == c->out.len) {
            c->off = c->out.len = 0;
            if (c->streaming) {
                gen_chunk(c);
                continue;
            }
            if (process_input(c) < 0) return -1;
            if (c->out.len) continue;
            set_events(c, 0);
            return c->close_after ? -1 : 0;
        }
        ssize_t n = send(c->fd, c->out.p + c->off, c->out.len - c->off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                set_events(c, 1);
                return 0;
            }
            return -1;
        }
        c->off += (size_t)n;
    }
}

static int on_readable(conn *c) {
    for (;;) {
        buf_reserve(&c->in, 16384);
        ssize_t n = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
        if (n == 0) return -1;
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            return -1;
        }
        c->in.len += (size_t)n;
        if (c->in.len > MAX_HEAD + MAX_BODY) return -1;
        if ((size_t)n < 16384) break;
    }
    if (c->streaming || c->off < c->out.len) return 0; /* answered in order later */
    if (process_input(c) < 0) return -1;
    return flush_out(c);
}

int main(int argc, char **argv) {
    int port = 0, one = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc) port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--token") && i + 1 < argc) token = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--port P] [--token T]\n", argv[0]);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 512)) {
        perror("bind/listen");
        return 1;
    }
    socklen_t sl = sizeof sa;
    getsockname(lfd, (struct sockaddr *)&sa, &sl);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
    printf("bench-server listening on http://127.0.0.1:%d\n", ntohs(sa.sin_port));
    fflush(stdout);
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(epfd, evs, 64, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conn *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            int rc = 0;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) rc = on_readable(c);
            if (rc == 0 && (evs[i].events & EPOLLOUT)) rc = flush_out(c);
            if (rc < 0) conn_free(c);
        }
    }
}
