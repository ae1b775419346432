/*
 * Transfer engine over libcurl's multi_socket interface: see engine.h.
 *
 * Invariants:
 * - A transfer is in its engine's list from engine_start() until
 *   bee_transfer_free() or engine_free(); `attached` says whether its easy
 *   handle is also in the multi handle (true exactly while it runs).
 * - libcurl callbacks (write, header, socket, timer) only touch C state of
 *   this file; they never block, never call back into the caller.
 * - The ready list holds each transfer at most once (in_ready) and has room
 *   for every live transfer, so marking progress never allocates.
 * - socks[] lists exactly the sockets libcurl asked us to watch (for
 *   engine_pollfds and the poll() path).  On Linux an epoll set mirrors it
 *   (same fds, same interest), so engine_step costs in proportion to the
 *   sockets that are ready, not to all of them.
 * - timers_due_at: no transfer's deadline or idle timer falls due before it
 *   (INT64_MAX: none may).  It is a lower bound, lowered when a timer starts
 *   (engine_start, head complete, unpause) and made exact again by each scan
 *   of check_timers, which runs only once it has passed.  Activity moves idle
 *   timers later only, so it never has to touch it.
 */
#include "engine.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__linux__) && !defined(BEE_NO_EPOLL)
#define BEE_EPOLL 1
#include <sys/epoll.h>
#include <unistd.h>
/* Events taken from the epoll set per epoll_wait call. */
#define EP_BATCH 64
#endif

#define DEFAULT_MAX_BODY (16u * 1024u * 1024u)
#define DEFAULT_QUEUE_HIGH (1024u * 1024u)
#define MAX_HEAD_BYTES (64u * 1024u)
#define SPARE_EASY_MAX 32

struct bee_transfer {
    bee_engine *e;
    bee_transfer *prev, *next;
    bee_transfer **owner_slot;
    CURL *easy;
    struct curl_slist *req_headers;
    uint64_t id;
    bee_state state;
    int attached;
    int in_ready;
    long status;
    int head_done;
    int stream, is_sse, report_comments, parser_live;
    int paused;
    int reused;
    int sse_cut;
    bee_buf head;
    bee_buf body;
    sse_parser parser;
    evq events;
    size_t max_body, max_event, queue_high;
    int64_t deadline_ms, last_activity_ms;
    long idle_timeout_ms;
    uint64_t bytes;
    const char *write_error; /* why a callback aborted the transfer */
    const char *err_code;
    char err_msg[CURL_ERROR_SIZE + 96];
    char curl_err[CURL_ERROR_SIZE];
};

typedef struct {
    curl_socket_t fd;
    int what;
} sock_slot;

struct bee_engine {
    CURLM *multi;
    bee_transfer *transfers;
    size_t ntransfers;
    int nattached;
    sock_slot *socks;
    size_t nsocks, capsocks;
    struct pollfd *scratch;
    size_t capscratch;
    int64_t curl_timer_at; /* -1: libcurl wants no timeout */
    bee_transfer **ready;
    size_t nready, capready;
    uint64_t next_id;
    CURL *spare[SPARE_EASY_MAX];
    size_t nspare;
    int64_t timers_due_at; /* see the invariants; INT64_MAX: no timer */
    int epfd;              /* epoll set mirroring socks[]; -1: poll() path */
};

int64_t bee_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *bee_curl_version(void) {
    /* libcurl's own static string: no buffer of ours to share between
     * Lua states (or threads). */
    const curl_version_info_data *d = curl_version_info(CURLVERSION_NOW);
    return d && d->version ? d->version : "?";
}

/* ------------------------------------------------------------------ */
/* Progress and failure                                                 */

/* A deadline or idle timer of some transfer falls due at `at`. */
static void timer_hint(bee_engine *e, int64_t at) {
    if (at < e->timers_due_at) e->timers_due_at = at;
}

static void mark_ready(bee_transfer *t) {
    bee_engine *e = t->e;
    if (t->in_ready) return;
    /* capready >= ntransfers is kept by engine_start. */
    e->ready[e->nready++] = t;
    t->in_ready = 1;
}

static void unlist_ready(bee_transfer *t) {
    bee_engine *e = t->e;
    size_t i;
    if (!t->in_ready) return;
    for (i = 0; i < e->nready; i++) {
        if (e->ready[i] == t) {
            memmove(e->ready + i, e->ready + i + 1, (e->nready - i - 1) * sizeof *e->ready);
            e->nready--;
            break;
        }
    }
    t->in_ready = 0;
}

static void release_easy(bee_engine *e, bee_transfer *t) {
    if (!t->easy) return;
    if (t->attached) {
        curl_multi_remove_handle(e->multi, t->easy);
        t->attached = 0;
        if (--e->nattached == 0) e->timers_due_at = INT64_MAX; /* no timer left */
    }
    if (e->nspare < SPARE_EASY_MAX) {
        curl_easy_reset(t->easy);
        e->spare[e->nspare++] = t->easy;
    } else {
        curl_easy_cleanup(t->easy);
    }
    t->easy = NULL;
    curl_slist_free_all(t->req_headers);
    t->req_headers = NULL;
}

static void fail(bee_transfer *t, const char *code, const char *fmt, const char *detail) {
    if (t->state == BT_DONE || t->state == BT_FAILED) return;
    t->err_code = code;
    snprintf(t->err_msg, sizeof t->err_msg, fmt, detail ? detail : "");
    t->state = BT_FAILED;
    if (t->parser_live) sse_finish(&t->parser, &t->sse_cut);
    release_easy(t->e, t);
    mark_ready(t);
}

/* ------------------------------------------------------------------ */
/* libcurl callbacks: C state only                                      */

static int ieq_prefix(const char *s, size_t n, const char *lit) {
    size_t i, m = strlen(lit);
    if (n < m) return 0;
    for (i = 0; i < m; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (c != lit[i]) return 0;
    }
    return 1;
}

/* The value of header `name` (lower case, without the colon) in a head of
 * "Name: value\n" lines, leading and trailing blanks trimmed. */
static const char *find_header(const bee_buf *head, const char *name, size_t *len) {
    const char *p, *end;
    size_t name_len = strlen(name);
    if (head->len == 0) return NULL; /* (and ptr may be NULL) */
    p = head->ptr;
    end = p + head->len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (n > name_len && p[name_len] == ':' && ieq_prefix(p, name_len, name)) {
            const char *v = p + name_len + 1, *e = p + n;
            while (v < e && (*v == ' ' || *v == '\t')) v++;
            while (e > v && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) e--;
            *len = (size_t)(e - v);
            return v;
        }
        p += n + 1;
    }
    return NULL;
}

static int head_is_event_stream(const bee_buf *head) {
    size_t len;
    const char *v = find_header(head, "content-type", &len);
    return v && ieq_prefix(v, len, "text/event-stream");
}

static size_t header_cb(char *ptr, size_t size, size_t nmemb, void *ud) {
    bee_transfer *t = (bee_transfer *)ud;
    size_t len = size * nmemb, n = len;
    t->bytes += len;
    t->last_activity_ms = bee_now_ms();
    if (len >= 5 && memcmp(ptr, "HTTP/", 5) == 0) {
        /* A new response head (after a 1xx, or the first one). */
        const char *sp = memchr(ptr, ' ', len);
        t->head.len = 0;
        t->head_done = 0;
        t->status = 0;
        if (sp && (size_t)(sp - ptr) + 4 <= len) {
            int i;
            for (i = 1; i <= 3 && sp[i] >= '0' && sp[i] <= '9'; i++)
                t->status = t->status * 10 + (sp[i] - '0');
        }
        return len;
    }
    if (t->head_done) return len; /* trailers */
    while (n > 0 && (ptr[n - 1] == '\n' || ptr[n - 1] == '\r')) n--;
    if (n == 0) {
        if (t->status >= 200) {
            t->head_done = 1;
            t->is_sse = t->stream && t->status >= 200 && t->status < 300 &&
                        head_is_event_stream(&t->head);
            if (t->is_sse) {
                sse_init(&t->parser, t->max_event, t->report_comments);
                t->parser_live = 1;
            }
            t->state = BT_HEADERS;
            if (t->idle_timeout_ms > 0) timer_hint(t->e, t->last_activity_ms + t->idle_timeout_ms);
            mark_ready(t);
        }
        return len;
    }
    if (t->head.len + n + 1 > MAX_HEAD_BYTES || bee_buf_reserve(&t->head, n + 1)) {
        t->write_error = "headers_too_large";
        return 0;
    }
    bee_buf_append(&t->head, ptr, n);
    t->head.ptr[t->head.len++] = '\n';
    return len;
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *ud) {
    bee_transfer *t = (bee_transfer *)ud;
    size_t len = size * nmemb;
    if (t->is_sse) {
        sse_status st;
        /* Backpressure: a consumer slower than the network stops the
         * socket reads instead of growing the queue. */
        if (evq_bytes(&t->events) >= t->queue_high) {
            t->paused = 1;
            return CURL_WRITEFUNC_PAUSE;
        }
        st = sse_feed(&t->parser, ptr, len, evq_sink, &t->events);
        if (st != SSE_OK) {
            t->write_error = st == SSE_ERR_TOO_LARGE ? "event_too_large" : "out_of_memory";
            return 0;
        }
    } else {
        if (t->body.len + len > t->max_body) {
            t->write_error = "body_too_large";
            return 0;
        }
        if (bee_buf_append(&t->body, ptr, len)) {
            t->write_error = "out_of_memory";
            return 0;
        }
    }
    t->bytes += len;
    t->last_activity_ms = bee_now_ms();
    mark_ready(t);
    return len;
}

#ifdef BEE_EPOLL
/* Gives up the epoll set: engine_step polls socks[] from now on, which
 * stays complete whatever epoll_ctl did. */
static void ep_disable(bee_engine *e) {
    if (e->epfd < 0) return;
    close(e->epfd);
    e->epfd = -1;
}

/* Mirrors libcurl's interest in fd into the epoll set.  `known` says
 * whether socks[] already lists fd; the set may disagree when libcurl
 * closed the fd and got the same number back for a new socket (the old
 * registration went with the old socket: ENOENT) or when a registration
 * outlived our bookkeeping (EEXIST). */
static void ep_watch(bee_engine *e, curl_socket_t fd, int what, int known) {
    struct epoll_event ev;
    if (e->epfd < 0) return;
    memset(&ev, 0, sizeof ev);
    ev.events = (uint32_t)(((what & CURL_POLL_IN) ? EPOLLIN : 0) |
                           ((what & CURL_POLL_OUT) ? EPOLLOUT : 0));
    ev.data.fd = fd;
    if (epoll_ctl(e->epfd, known ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) == 0) return;
    if (errno == EEXIST && epoll_ctl(e->epfd, EPOLL_CTL_MOD, fd, &ev) == 0) return;
    if (errno == ENOENT && epoll_ctl(e->epfd, EPOLL_CTL_ADD, fd, &ev) == 0) return;
    if (errno == EBADF) return; /* not open: nothing to watch (poll: POLLNVAL) */
    ep_disable(e); /* ENOMEM, ENOSPC (max_user_watches), ...: poll() instead */
}

static void ep_unwatch(bee_engine *e, curl_socket_t fd) {
    /* Fails harmlessly when libcurl already closed fd (EBADF; closing it
     * dropped the registration) or it was never registered (ENOENT). */
    if (e->epfd >= 0) epoll_ctl(e->epfd, EPOLL_CTL_DEL, fd, NULL);
}
#else
#define ep_watch(e, fd, what, known) ((void)0)
#define ep_unwatch(e, fd) ((void)0)
#endif

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
    bee_engine *e = (bee_engine *)userp;
    size_t slot = (size_t)(uintptr_t)socketp; /* index + 1; 0: not tracked */
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        ep_unwatch(e, fd);
        if (slot) {
            size_t i = slot - 1;
            e->socks[i] = e->socks[--e->nsocks];
            if (i < e->nsocks)
                curl_multi_assign(e->multi, e->socks[i].fd, (void *)(uintptr_t)(i + 1));
        }
        return 0;
    }
    if (slot) {
        ep_watch(e, fd, what, 1);
        e->socks[slot - 1].what = what;
        return 0;
    }
    if (e->nsocks == e->capsocks) {
        size_t cap = e->capsocks ? e->capsocks * 2 : 16;
        sock_slot *p = realloc(e->socks, cap * sizeof *p);
        if (!p) return -1;
        e->socks = p;
        e->capsocks = cap;
    }
    ep_watch(e, fd, what, 0);
    e->socks[e->nsocks].fd = fd;
    e->socks[e->nsocks].what = what;
    e->nsocks++;
    curl_multi_assign(e->multi, fd, (void *)(uintptr_t)e->nsocks);
    return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp) {
    bee_engine *e = (bee_engine *)userp;
    (void)multi;
    e->curl_timer_at = timeout_ms < 0 ? -1 : bee_now_ms() + timeout_ms;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Engine                                                               */

bee_engine *engine_new(const char **err) {
    bee_engine *e;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        *err = "curl_global_init failed";
        return NULL;
    }
    e = calloc(1, sizeof *e);
    if (!e) {
        curl_global_cleanup();
        *err = "out of memory";
        return NULL;
    }
    e->multi = curl_multi_init();
    if (!e->multi) {
        free(e);
        curl_global_cleanup();
        *err = "curl_multi_init failed";
        return NULL;
    }
    e->curl_timer_at = -1;
    e->timers_due_at = INT64_MAX;
#ifdef BEE_EPOLL
    /* No epoll set (fd limit, say) is not fatal: the poll() path remains. */
    e->epfd = epoll_create1(EPOLL_CLOEXEC);
#else
    e->epfd = -1;
#endif
    curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, e);
    curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, e);
    return e;
}

void engine_free(bee_engine *e) {
    size_t i;
    if (!e) return;
    while (e->transfers) {
        bee_transfer *t = e->transfers;
        if (t->owner_slot) *t->owner_slot = NULL;
        bee_transfer_free(t);
    }
    for (i = 0; i < e->nspare; i++) curl_easy_cleanup(e->spare[i]);
    curl_multi_cleanup(e->multi); /* may still remove sockets from the set */
#ifdef BEE_EPOLL
    ep_disable(e);
#endif
    free(e->socks);
    free(e->scratch);
    free(e->ready);
    free(e);
    curl_global_cleanup();
}

static CURL *take_easy(bee_engine *e) {
    if (e->nspare) return e->spare[--e->nspare];
    return curl_easy_init();
}

#define SETOPT(opt, val)                                                      \
    do {                                                                      \
        if (curl_easy_setopt(t->easy, opt, val) != CURLE_OK) {                \
            *err = "libcurl rejected option " #opt;                           \
            goto fail;                                                        \
        }                                                                     \
    } while (0)

bee_transfer *engine_start(bee_engine *e, const bee_request *rq, const char **err) {
    bee_transfer *t;
    size_t i;
    if (e->capready < e->ntransfers + 1) {
        size_t cap = e->capready ? e->capready * 2 : 16;
        bee_transfer **p = realloc(e->ready, cap * sizeof *p);
        if (!p) {
            *err = "out of memory";
            return NULL;
        }
        e->ready = p;
        e->capready = cap;
    }
    t = calloc(1, sizeof *t);
    if (!t) {
        *err = "out of memory";
        return NULL;
    }
    t->e = e;
    evq_init(&t->events);
    t->easy = take_easy(e);
    if (!t->easy) {
        free(t);
        *err = "curl_easy_init failed";
        return NULL;
    }
    for (i = 0; i < rq->nheaders; i++) {
        struct curl_slist *l = curl_slist_append(t->req_headers, rq->headers[i]);
        if (!l) {
            *err = "out of memory";
            goto fail;
        }
        t->req_headers = l;
    }
    /* libcurl would add "Expect: 100-continue" to large bodies and wait
     * for a reply the server never sends. */
    {
        struct curl_slist *l = curl_slist_append(t->req_headers, "Expect:");
        if (!l) {
            *err = "out of memory";
            goto fail;
        }
        t->req_headers = l;
    }
    t->stream = rq->stream;
    t->report_comments = rq->report_comments;
    t->max_body = rq->max_body ? rq->max_body : DEFAULT_MAX_BODY;
    t->max_event = rq->max_event;
    t->queue_high = rq->queue_high ? rq->queue_high : DEFAULT_QUEUE_HIGH;
    t->deadline_ms = rq->deadline_ms;
    t->idle_timeout_ms = rq->idle_timeout_ms;
    t->last_activity_ms = bee_now_ms();

    SETOPT(CURLOPT_URL, rq->url);
#if LIBCURL_VERSION_NUM >= 0x075500
    SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
#else
    SETOPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SETOPT(CURLOPT_PRIVATE, t);
    SETOPT(CURLOPT_ERRORBUFFER, t->curl_err);
    SETOPT(CURLOPT_NOSIGNAL, 1L);
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(CURLOPT_TCP_NODELAY, 1L);
    SETOPT(CURLOPT_HTTPHEADER, t->req_headers);
    SETOPT(CURLOPT_HEADERFUNCTION, header_cb);
    SETOPT(CURLOPT_HEADERDATA, t);
    SETOPT(CURLOPT_WRITEFUNCTION, write_cb);
    SETOPT(CURLOPT_WRITEDATA, t);
    if (rq->connect_timeout_ms > 0) SETOPT(CURLOPT_CONNECTTIMEOUT_MS, rq->connect_timeout_ms);
    if (rq->insecure) {
        SETOPT(CURLOPT_SSL_VERIFYPEER, 0L);
        SETOPT(CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (rq->ca_file) SETOPT(CURLOPT_CAINFO, rq->ca_file);
    if (!rq->method || strcmp(rq->method, "POST") == 0) {
        SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
        SETOPT(CURLOPT_COPYPOSTFIELDS, rq->body ? rq->body : "");
    } else if (strcmp(rq->method, "GET") == 0) {
        SETOPT(CURLOPT_HTTPGET, 1L);
    } else {
        *err = "unsupported method";
        goto fail;
    }
    if (curl_multi_add_handle(e->multi, t->easy) != CURLM_OK) {
        *err = "curl_multi_add_handle failed";
        goto fail;
    }
    t->attached = 1;
    e->nattached++;
    t->id = ++e->next_id;
    if (t->deadline_ms) timer_hint(e, t->deadline_ms);
    t->next = e->transfers;
    if (e->transfers) e->transfers->prev = t;
    e->transfers = t;
    e->ntransfers++;
    return t;
fail:
    release_easy(e, t);
    evq_free(&t->events);
    free(t);
    return NULL;
}

static const char *map_curl_error(const bee_transfer *t, CURLcode rc) {
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
        return "connect_failed";
    case CURLE_OPERATION_TIMEDOUT:
        return "connect_timeout"; /* the only libcurl timeout we set */
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
        return "tls_failed";
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return "bad_url";
    case CURLE_OUT_OF_MEMORY:
        return "out_of_memory";
    case CURLE_WRITE_ERROR:
        if (t->write_error) return t->write_error;
        break;
    case CURLE_SEND_ERROR:
        if (!t->head_done && t->bytes == 0) return "send_failed";
        break;
    default:
        break;
    }
    if (!t->head_done) return "connection_closed";
    return t->is_sse ? "stream_interrupted" : "response_interrupted";
}

static void finish(bee_transfer *t, CURLcode rc) {
    long connects = 1;
    curl_easy_getinfo(t->easy, CURLINFO_NUM_CONNECTS, &connects);
    t->reused = connects == 0;
    if (rc == CURLE_OK && t->write_error) rc = CURLE_WRITE_ERROR;
    if (rc == CURLE_OK && !t->head_done) rc = CURLE_GOT_NOTHING;
    if (rc != CURLE_OK) {
        char detail[CURL_ERROR_SIZE + 64];
        snprintf(detail, sizeof detail, "%s%s%s", curl_easy_strerror(rc),
                 t->curl_err[0] ? ": " : "", t->curl_err);
        fail(t, map_curl_error(t, rc), "%s", detail);
        return;
    }
    if (t->parser_live) sse_finish(&t->parser, &t->sse_cut);
    t->state = BT_DONE;
    release_easy(t->e, t);
    mark_ready(t);
}

static void drain_messages(bee_engine *e) {
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(e->multi, &left))) {
        bee_transfer *t = NULL;
        if (msg->msg != CURLMSG_DONE) continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
        if (t) finish(t, msg->data.result);
    }
}

/* Fails the transfers whose deadline or idle timer has passed, once the
 * earliest due time has come; the scan notes the next one. */
static void check_timers(bee_engine *e, int64_t now) {
    bee_transfer *t, *next;
    if (now < e->timers_due_at) return;
    e->timers_due_at = INT64_MAX;
    for (t = e->transfers; t; t = next) {
        int idle_on;
        next = t->next;
        if (!t->attached) continue;
        idle_on = t->idle_timeout_ms > 0 && t->head_done && !t->paused;
        if (t->deadline_ms && now >= t->deadline_ms) {
            fail(t, "deadline", "the call's deadline passed%s", NULL);
        } else if (idle_on && now - t->last_activity_ms >= t->idle_timeout_ms) {
            char ms[32];
            snprintf(ms, sizeof ms, "%ld", t->idle_timeout_ms);
            fail(t, "idle_timeout", "no bytes received for %s ms", ms);
        } else {
            if (t->deadline_ms) timer_hint(e, t->deadline_ms);
            if (idle_on) timer_hint(e, t->last_activity_ms + t->idle_timeout_ms);
        }
    }
}

static void earliest(int64_t *best, int *have, int64_t d) {
    if (!*have || d < *best) *best = d;
    *have = 1;
}

long engine_timeout_ms(bee_engine *e) {
    int64_t now = bee_now_ms(), best = 0;
    int have = 0;
    if (e->curl_timer_at >= 0) earliest(&best, &have, e->curl_timer_at - now);
    /* Possibly early (a timer since moved on or gone): the step it causes
     * rescans and finds the true next one. */
    if (e->timers_due_at != INT64_MAX) earliest(&best, &have, e->timers_due_at - now);
    if (!have) return -1;
    if (best < 0) return 0;
    return best > 0x7fffffff ? 0x7fffffff : (long)best;
}

size_t engine_nsockets(const bee_engine *e) { return e->nsocks; }

int engine_active(const bee_engine *e) { return e->nattached; }

size_t engine_pollfds(bee_engine *e, struct pollfd *out, size_t max) {
    size_t i, n = e->nsocks < max ? e->nsocks : max;
    for (i = 0; i < n; i++) {
        out[i].fd = e->socks[i].fd;
        out[i].events = (short)(((e->socks[i].what & CURL_POLL_IN) ? POLLIN : 0) |
                                ((e->socks[i].what & CURL_POLL_OUT) ? POLLOUT : 0));
        out[i].revents = 0;
    }
    return n;
}

/* The work after the sockets were served: libcurl's timer, finished
 * transfers, our timers. */
static void after_io(bee_engine *e) {
    int running;
    if (e->curl_timer_at >= 0 && bee_now_ms() >= e->curl_timer_at) {
        e->curl_timer_at = -1;
        curl_multi_socket_action(e->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    drain_messages(e);
    check_timers(e, bee_now_ms());
}

void engine_handle(bee_engine *e, const struct pollfd *fds, size_t nfds) {
    size_t i;
    int running;
    for (i = 0; i < nfds; i++) {
        int ev = 0;
        short r = fds[i].revents;
        if (!r || (r & POLLNVAL)) continue;
        if (r & (POLLIN | POLLHUP)) ev |= CURL_CSELECT_IN;
        if (r & POLLOUT) ev |= CURL_CSELECT_OUT;
        if (r & POLLERR) ev |= CURL_CSELECT_ERR;
        curl_multi_socket_action(e->multi, fds[i].fd, ev, &running);
    }
    after_io(e);
}

int engine_fd(const bee_engine *e) { return e->epfd; }

#ifdef BEE_EPOLL
/* Waits up to timeout_ms on the epoll set and serves the ready sockets
 * only.  A full batch means more may be ready: take them too, a bounded
 * number of times (level-triggered, a socket libcurl leaves readable would
 * be reported again and again). */
static void ep_step(bee_engine *e, long timeout_ms) {
    struct epoll_event evs[EP_BATCH];
    size_t rounds = e->nsocks / EP_BATCH + 1;
    int n, i, running;
    do {
        if (e->epfd < 0) break; /* disabled by a callback below */
        n = epoll_wait(e->epfd, evs, EP_BATCH, (int)timeout_ms);
        timeout_ms = 0;
        for (i = 0; i < n; i++) {
            int ev = 0;
            uint32_t r = evs[i].events;
            if (r & (EPOLLIN | EPOLLHUP)) ev |= CURL_CSELECT_IN;
            if (r & EPOLLOUT) ev |= CURL_CSELECT_OUT;
            if (r & EPOLLERR) ev |= CURL_CSELECT_ERR;
            curl_multi_socket_action(e->multi, evs[i].data.fd, ev, &running);
        }
    } while (n == EP_BATCH && --rounds > 0);
    after_io(e);
}
#endif

/* One poll() over every socket: where there is no epoll. */
static void poll_step(bee_engine *e, long timeout_ms) {
    size_t n = e->nsocks;
    if (n > e->capscratch) {
        struct pollfd *p = realloc(e->scratch, n * sizeof *p);
        if (p) {
            e->scratch = p;
            e->capscratch = n;
        } else {
            n = e->capscratch; /* poll fewer sockets this round */
        }
    }
    n = engine_pollfds(e, e->scratch, n);
    if (poll(e->scratch, (nfds_t)n, (int)timeout_ms) < 0 && errno != EINTR) {
        /* Cannot happen with a valid array; treat as "nothing ready". */
        for (size_t i = 0; i < n; i++) e->scratch[i].revents = 0;
    }
    engine_handle(e, e->scratch, n);
}

int engine_step(bee_engine *e, long timeout_ms) {
    long due = engine_timeout_ms(e);
    if (due >= 0 && due < timeout_ms) timeout_ms = due;
    if (timeout_ms < 0) timeout_ms = 0;
#ifdef BEE_EPOLL
    if (e->epfd >= 0) {
        ep_step(e, timeout_ms);
        return e->nattached;
    }
#endif
    poll_step(e, timeout_ms);
    return e->nattached;
}

size_t engine_take_ready(bee_engine *e, uint64_t *ids, size_t max) {
    size_t i, n = e->nready < max ? e->nready : max;
    for (i = 0; i < n; i++) {
        ids[i] = e->ready[i]->id;
        e->ready[i]->in_ready = 0;
    }
    memmove(e->ready, e->ready + n, (e->nready - n) * sizeof *e->ready);
    e->nready -= n;
    return n;
}

/* ------------------------------------------------------------------ */
/* Transfers                                                            */

uint64_t bee_transfer_id(const bee_transfer *t) { return t->id; }
bee_state bee_transfer_state(const bee_transfer *t) { return t->state; }
long bee_transfer_status(const bee_transfer *t) { return t->status; }
int bee_transfer_head_done(const bee_transfer *t) { return t->head_done; }
int bee_transfer_is_sse(const bee_transfer *t) { return t->is_sse; }
int bee_transfer_sse_cut(const bee_transfer *t) { return t->sse_cut; }
uint64_t bee_transfer_bytes_received(const bee_transfer *t) { return t->bytes; }
int bee_transfer_reused(const bee_transfer *t) { return t->reused; }
evq *bee_transfer_events(bee_transfer *t) { return &t->events; }

const char *bee_transfer_headers(const bee_transfer *t, size_t *len) {
    *len = t->head.len;
    return t->head.len ? t->head.ptr : "";
}

const char *bee_transfer_header(const bee_transfer *t, const char *name, size_t *len) {
    char lower[64];
    size_t i, n = strlen(name);
    if (n >= sizeof lower) return NULL;
    for (i = 0; i <= n; i++)
        lower[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] - 'A' + 'a' : name[i]);
    return find_header(&t->head, lower, len);
}

const char *bee_transfer_body(const bee_transfer *t, size_t *len) {
    *len = t->body.len;
    return t->body.len ? t->body.ptr : "";
}

const char *bee_transfer_last_event_id(const bee_transfer *t, size_t *len) {
    if (!t->parser_live) {
        *len = 0;
        return "";
    }
    return sse_last_event_id(&t->parser, len);
}

const char *bee_transfer_error(const bee_transfer *t, const char **message) {
    if (message) *message = t->err_msg;
    return t->err_code;
}

void bee_transfer_events_taken(bee_transfer *t) {
    if (t->paused && t->attached && evq_bytes(&t->events) <= t->queue_high / 2) {
        t->paused = 0;
        t->last_activity_ms = bee_now_ms();
        if (t->idle_timeout_ms > 0) timer_hint(t->e, t->last_activity_ms + t->idle_timeout_ms);
        /* May deliver the held chunk through write_cb right here.  If that
         * chunk is refused (a cap, memory), libcurl returns the error
         * without arming a timer or a socket again: nothing would ever
         * drive the transfer, so it is failed here. */
        if (curl_easy_pause(t->easy, CURLPAUSE_CONT) != CURLE_OK || t->write_error)
            fail(t, t->write_error ? t->write_error : "out_of_memory",
                 "the held chunk was refused: %s", t->write_error);
    }
}

void bee_transfer_set_owner(bee_transfer *t, bee_transfer **slot) { t->owner_slot = slot; }

void bee_transfer_free(bee_transfer *t) {
    bee_engine *e;
    if (!t) return;
    e = t->e;
    release_easy(e, t);
    unlist_ready(t);
    if (t->prev) t->prev->next = t->next;
    else e->transfers = t->next;
    if (t->next) t->next->prev = t->prev;
    e->ntransfers--;
    if (t->parser_live) sse_free(&t->parser);
    evq_free(&t->events);
    bee_buf_free(&t->head);
    bee_buf_free(&t->body);
    free(t);
}
