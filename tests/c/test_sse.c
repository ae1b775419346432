/*
 * Unit tests of the pure C parts the SSE path is made of: the parser
 * (src/sse.c, WHATWG HTML "event stream interpretation"), the event queue
 * (src/evq.c) and the JSON fast path (src/fastjson.c).  No Lua, no network.
 *
 * Every parser case is a stream and what must come out of it.  check_case
 * feeds the stream whole, one byte at a time, in every 2-way split (empty
 * first or last chunk included) and, for short streams, in every 3-way
 * split, and requires the very same events, status, last event id, retry
 * and finish result from each.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

#include "evq.h"
#include "fastjson.h"
#include "sse.h"
#include "sse_record.h"

/* Feeds a string literal (which may hold NULs). */
#define FEEDL(p, lit, sink, ud) sse_feed((p), (lit), sizeof(lit) - 1, (sink), (ud))

/* ------------------------------------------------------------------ */
/* Recording what the parser delivers                                   */

typedef struct {
    rec_ev *v;
    size_t n, cap;
    long stop_at; /* sink returns non-zero for event number stop_at (0-based); -1 never */
} recorder;

static int rec_sink(void *ud, const sse_event *ev) {
    recorder *r = (recorder *)ud;
    if (r->stop_at >= 0 && (long)r->n == r->stop_at) return 1;
    rec_append(&r->v, &r->n, &r->cap, ev->kind, ev->type, ev->type_len, ev->data, ev->data_len,
               ev->id, ev->id_len);
    return 0;
}

static void rec_init(recorder *r) {
    memset(r, 0, sizeof *r);
    r->stop_at = -1;
}

static void rec_free(recorder *r) {
    rec_release(r->v, r->n);
    memset(r, 0, sizeof *r);
}

/* ------------------------------------------------------------------ */
/* One run of a stream through a parser, with given chunk boundaries    */

typedef struct {
    recorder events;
    sse_status status;       /* first failed feed's status, else SSE_OK */
    sse_status again;        /* a feed after that failure (must be the same) */
    size_t events_after;     /* events delivered by that feed (must be 0) */
    sse_status finish_status;
    int pending;
    sse_status after_finish; /* a feed after finish */
    sse_status finish_again; /* a second finish ... */
    int pending_again;       /* ... and what it reports */
    char *last_id;
    size_t last_id_len;
    int has_retry;
    uint64_t retry;
} outcome;

static void outcome_free(outcome *o) {
    rec_free(&o->events);
    free(o->last_id);
}

/* Feeds in[0..len) cut at cuts[0] < cuts[1] < ... (each in 0..len). */
static void run_stream(const char *in, size_t len, const size_t *cuts, size_t ncuts,
                       size_t max_event, int comments, outcome *o) {
    sse_parser p;
    size_t at = 0, i;
    const char *id;
    memset(o, 0, sizeof *o);
    rec_init(&o->events);
    sse_init(&p, max_event, comments);
    o->status = SSE_OK;
    for (i = 0; i <= ncuts && o->status == SSE_OK; i++) {
        size_t to = i < ncuts ? cuts[i] : len;
        o->status = sse_feed(&p, in + at, to - at, rec_sink, &o->events);
        at = to;
    }
    if (o->status != SSE_OK) {
        size_t before = o->events.n;
        o->again = FEEDL(&p, "data: x\n\n", rec_sink, &o->events);
        o->events_after = o->events.n - before;
    }
    o->finish_status = sse_finish(&p, &o->pending);
    o->after_finish = FEEDL(&p, "data: y\n\n", rec_sink, &o->events);
    o->finish_again = sse_finish(&p, &o->pending_again);
    id = sse_last_event_id(&p, &o->last_id_len);
    o->last_id = dupmem(id, o->last_id_len);
    o->has_retry = sse_retry(&p, &o->retry);
    sse_free(&p);
}

/* ------------------------------------------------------------------ */
/* Expectations                                                         */

typedef struct {
    sse_kind kind;
    const char *type;
    size_t type_len;
    const char *data;
    size_t data_len;
    const char *id;
    size_t id_len;
} exp_ev;

/* String literals only (they may hold NULs). */
#define EV(t, d, i) {SSE_KIND_EVENT, t, sizeof(t) - 1, d, sizeof(d) - 1, i, sizeof(i) - 1}
#define COMMENT(c) {SSE_KIND_COMMENT, "", 0, c, sizeof(c) - 1, "", 0}
#define END_EV {SSE_KIND_EVENT, NULL, 0, NULL, 0, NULL, 0}
/* An END_EV-terminated list, parenthesised so it is one macro argument. */
#define EVS(...) ((const exp_ev[]){__VA_ARGS__, END_EV})
static const exp_ev NO_EVENTS[] = {END_EV};

typedef struct {
    size_t max_event;  /* 0: the default */
    int comments;
    const char *last_id; /* NULL: "" (no NULs in ids, so strlen) */
    int has_retry;
    uint64_t retry;
    int cut;           /* finish reports a discarded incomplete event */
    sse_status status; /* expected result of the feeds */
} exp_end;

/* Describes the first difference between o and the expectation in buf;
 * returns 1 when there is none. */
static int compare(const outcome *o, const exp_ev *evs, const exp_end *x, char *buf,
                   size_t bufsz) {
    size_t n = 0, i;
    const char *want_id = x->last_id ? x->last_id : "";
    while (evs[n].data) n++;
    if (o->events.n != n) {
        snprintf(buf, bufsz, "%zu events, expected %zu", o->events.n, n);
        return 0;
    }
    for (i = 0; i < n; i++) {
        const rec_ev *g = &o->events.v[i];
        const exp_ev *w = &evs[i];
        if (g->kind != w->kind || g->type_len != w->type_len ||
            memcmp(g->type, w->type, w->type_len) != 0 || g->data_len != w->data_len ||
            memcmp(g->data, w->data, w->data_len) != 0 || g->id_len != w->id_len ||
            memcmp(g->id, w->id, w->id_len) != 0) {
            snprintf(buf, bufsz, "event %zu differs (kind %d type %.*s data(%zu) %.*s id %.*s)",
                     i, (int)g->kind, (int)g->type_len, g->type, g->data_len,
                     (int)(g->data_len > 40 ? 40 : g->data_len), g->data, (int)g->id_len,
                     g->id);
            return 0;
        }
    }
    if (o->status != x->status) {
        snprintf(buf, bufsz, "status %d, expected %d", (int)o->status, (int)x->status);
        return 0;
    }
    if (o->status != SSE_OK && (o->again != o->status || o->events_after != 0)) {
        snprintf(buf, bufsz, "error not sticky: again %d, %zu more events", (int)o->again,
                 o->events_after);
        return 0;
    }
    if (o->finish_status != x->status) {
        snprintf(buf, bufsz, "finish status %d, expected %d", (int)o->finish_status,
                 (int)x->status);
        return 0;
    }
    if (x->status == SSE_OK && o->pending != x->cut) {
        snprintf(buf, bufsz, "finish pending %d, expected %d", o->pending, x->cut);
        return 0;
    }
    if (o->after_finish != SSE_ERR_FINISHED || o->finish_again != o->finish_status ||
        o->pending_again != o->pending) {
        snprintf(buf, bufsz, "after finish: feed %d, finish %d pending %d", (int)o->after_finish,
                 (int)o->finish_again, o->pending_again);
        return 0;
    }
    if (o->last_id_len != strlen(want_id) || memcmp(o->last_id, want_id, o->last_id_len)) {
        snprintf(buf, bufsz, "last_event_id %.*s, expected %s", (int)o->last_id_len,
                 o->last_id, want_id);
        return 0;
    }
    if (o->has_retry != x->has_retry || (x->has_retry && o->retry != x->retry)) {
        snprintf(buf, bufsz, "retry %d/%llu, expected %d/%llu", o->has_retry,
                 (unsigned long long)o->retry, x->has_retry, (unsigned long long)x->retry);
        return 0;
    }
    return 1;
}

static unsigned long variants_run;

/* Runs one chunking, checks it; returns 0 on a mismatch (reported). */
static int check_variant(const char *name, const char *in, size_t len, const size_t *cuts,
                         size_t ncuts, const char *how, const exp_ev *evs,
                         const exp_end *x, const char *file, int line) {
    outcome o;
    char why[512], what[1024];
    int ok;
    run_stream(in, len, cuts, ncuts, x->max_event, x->comments, &o);
    variants_run++;
    ok = compare(&o, evs, x, why, sizeof why);
    if (!ok) {
        size_t i, w;
        w = (size_t)snprintf(what, sizeof what, "case \"%s\" fed %s", name, how);
        for (i = 0; i < ncuts && i < 8 && w < sizeof what - 32; i++)
            w += (size_t)snprintf(what + w, sizeof what - w, "%s%zu", i ? "," : " at ",
                                  cuts[i]);
        snprintf(what + w, sizeof what - w, ": %s", why);
    }
    harness_check(ok, file, line, ok ? "" : what);
    outcome_free(&o);
    return ok;
}

/* Streams up to this long are also fed in every 3-way split. */
#define THREE_WAY_MAX 64

static void check_case_at(const char *name, const char *in, size_t len, const exp_ev *evs,
                          const exp_end *x, const char *file, int line) {
    size_t *cuts = malloc((len + 1) * sizeof *cuts);
    size_t i, j;
    if (!cuts) abort();
    if (!check_variant(name, in, len, NULL, 0, "whole", evs, x, file, line)) goto out;
    for (i = 0; i + 1 < len; i++) cuts[i] = i + 1;
    if (len > 1 && !check_variant(name, in, len, cuts, len - 1, "byte by byte", evs, x,
                                  file, line))
        goto out;
    for (i = 0; i <= len; i++) {
        cuts[0] = i;
        if (!check_variant(name, in, len, cuts, 1, "in 2 chunks", evs, x, file, line))
            goto out;
    }
    if (len <= THREE_WAY_MAX) {
        for (i = 1; i < len; i++)
            for (j = i + 1; j < len; j++) {
                cuts[0] = i;
                cuts[1] = j;
                if (!check_variant(name, in, len, cuts, 2, "in 3 chunks", evs, x, file,
                                   line))
                    goto out;
            }
    }
out:
    free(cuts);
}

/* CASE(name, "stream literal", expected_events, .field = value, ...) */
#define CASE(name, lit, evs, ...) \
    check_case_at(name, lit, sizeof(lit) - 1, evs, &(exp_end){__VA_ARGS__}, __FILE__, __LINE__)

/* ------------------------------------------------------------------ */
/* Parser: the rules, each stream in every chunking                     */

TEST(test_basic_events) {
    static const exp_ev one[] = {EV("message", "hello", ""), END_EV};
    static const exp_ev two[] = {EV("message", "a", ""), EV("message", "b", ""), END_EV};
    CASE("one event", "data: hello\n\n", one, .cut = 0);
    CASE("two events", "data: a\n\ndata: b\n\n", two, .cut = 0);
    CASE("empty stream", "", NO_EVENTS, .cut = 0);
    CASE("only blank lines", "\n\n\r\n\r\r", NO_EVENTS, .cut = 0);
    CASE("the spec's example", "data: YHOO\ndata: +2\ndata: 10\n\n", EVS(EV("message", "YHOO\n+2\n10", "")), .cut = 0);
}

TEST(test_bom) {
    static const exp_ev one[] = {EV("message", "x", ""), END_EV};
    static const exp_ev in_value[] = {EV("message", "\xEF\xBB\xBF" "x", ""), END_EV};
    static const exp_ev bom_comment[] = {COMMENT("\xEF\xBB\xBF"), END_EV};
    /* One leading BOM is dropped (in every chunking: its three bytes in
     * three chunks included). */
    CASE("leading BOM", "\xEF\xBB\xBF" "data: x\n\n", one, .cut = 0);
    CASE("BOM then comment", "\xEF\xBB\xBF" ":c\ndata: x\n\n", one, .cut = 0);
    CASE("BOM alone", "\xEF\xBB\xBF", NO_EVENTS, .cut = 0);
    CASE("BOM then blank", "\xEF\xBB\xBF\n", NO_EVENTS, .cut = 0);
    /* A second BOM is content: here it makes the field name "\uFEFFdata",
     * an unknown field, so nothing is dispatched. */
    CASE("second BOM is data", "\xEF\xBB\xBF\xEF\xBB\xBF" "data: x\n\n", NO_EVENTS, .cut = 0);
    CASE("second BOM reported", "\xEF\xBB\xBF:\xEF\xBB\xBF\n", bom_comment, .comments = 1);
    CASE("BOM inside a value", "data: \xEF\xBB\xBF" "x\n\n", in_value, .cut = 0);
    CASE("BOM after an event", "data: x\n\n\xEF\xBB\xBF" "data: x\n\n", one, .cut = 0);
    /* A partial BOM is not one: its bytes start the first line. */
    CASE("partial BOM 1", "\xEF" "data: x\n\n", NO_EVENTS, .cut = 0);
    CASE("partial BOM 2", "\xEF\xBB" "data: x\n\n", NO_EVENTS, .cut = 0);
    CASE("partial BOM + BOM", "\xEF\xEF\xBB\xBF" "data: x\n\n", NO_EVENTS, .cut = 0);
    CASE("partial BOM + LF", "\xEF\xBB\n\ndata: x\n\n", one, .cut = 0);
    CASE("partial BOM as comment", "\xEF\xBB:x\n", NO_EVENTS, .comments = 1, .cut = 1);
    CASE("partial BOM at the end", "\xEF\xBB", NO_EVENTS, .cut = 1);
    CASE("BOM bytes as first line", "\xEF\xBB\r\n", NO_EVENTS, .cut = 1);
}

TEST(test_line_ends) {
    static const exp_ev ab[] = {EV("message", "a\nb", ""), END_EV};
    static const exp_ev two[] = {EV("message", "a", ""), EV("message", "b", ""), END_EV};
    CASE("LF", "data: a\ndata: b\n\n", ab, .cut = 0);
    CASE("CRLF", "data: a\r\ndata: b\r\n\r\n", ab, .cut = 0);
    CASE("CR", "data: a\rdata: b\r\r", ab, .cut = 0);
    CASE("mixed", "data: a\rdata: b\r\n\n", ab, .cut = 0);
    CASE("mixed 2", "data: a\ndata: b\r\r\n", ab, .cut = 0);
    CASE("CR events", "data: a\r\rdata: b\r\r", two, .cut = 0);
    CASE("CRLF events", "data: a\r\n\r\ndata: b\r\n\r\n", two, .cut = 0);
    /* LF CR is two line ends (a blank line), CR CR too; CR LF is one. */
    CASE("LF CR", "data: a\n\rdata: b\n\r", two, .cut = 0);
    CASE("CR LF LF", "data: a\r\n\ndata: b\r\n\n", two, .cut = 0);
    CASE("CR CR LF", "data: a\r\r\ndata: b\n\n", two, .cut = 0);
    CASE("CRLF is one", "data: a\r\ndata: b\r\n", NO_EVENTS, .cut = 1);
    CASE("LF LF LF", "data: a\n\n\ndata: b\n\n\n", two, .cut = 0);
}

TEST(test_comments) {
    static const exp_ev ab[] = {EV("message", "a\nb", ""), END_EV};
    static const exp_ev reported[] = {COMMENT(" hi"), EV("message", "a\nb", ""), COMMENT(""),
                                      COMMENT(":x: y"), END_EV};
    CASE("comments ignored", ": hi\ndata: a\n:\ndata: b\n\n", ab, .cut = 0);
    CASE("comment does not dispatch", "data: a\n: x\n", NO_EVENTS, .cut = 1);
    CASE("comments reported", ": hi\ndata: a\ndata: b\n\n:\n::x: y\n", reported, .comments = 1);
    /* Comment lines are not part of an event: ending on one is clean. */
    CASE("trailing comment is clean", "data: a\n\n: keepalive\n", EVS(EV("message", "a", "")), .cut = 0);
    CASE("unterminated comment", ": keepalive", NO_EVENTS, .cut = 1);
    CASE("comment CR", ":a\r:b\r\n:c\n", EVS(COMMENT("a"), COMMENT("b"), COMMENT("c")), .comments = 1);
}

TEST(test_fields) {
    CASE("no space", "data:x\n\n", EVS(EV("message", "x", "")), .cut = 0);
    CASE("one space removed", "data:  x\n\n", EVS(EV("message", " x", "")), .cut = 0);
    CASE("tab kept", "data:\tx\n\n", EVS(EV("message", "\tx", "")), .cut = 0);
    CASE("trailing space kept", "data: x \n\n", EVS(EV("message", "x ", "")), .cut = 0);
    CASE("later colons are value", "data: a: b:c\n\n", EVS(EV("message", "a: b:c", "")), .cut = 0);
    CASE("value only a space", "data: \n\n", EVS(EV("message", "", "")), .cut = 0);
    CASE("value empty", "data:\n\n", EVS(EV("message", "", "")), .cut = 0);
    /* A line without a colon is the field name with an empty value. */
    CASE("no colon data", "data\n\n", EVS(EV("message", "", "")), .cut = 0);
    CASE("no colon data x2", "data\ndata\n\n", EVS(EV("message", "\n", "")), .cut = 0);
    CASE("no colon event", "event: a\nevent\ndata: x\n\n", EVS(EV("message", "x", "")), .cut = 0);
    /* Names are case-sensitive and exact. */
    CASE("Data", "Data: x\n\n", NO_EVENTS, .cut = 0);
    CASE("DATA", "DATA: x\n\n", NO_EVENTS, .cut = 0);
    CASE("space before colon", "data : x\n\n", NO_EVENTS, .cut = 0);
    CASE("leading space", " data: x\n\n", NO_EVENTS, .cut = 0);
    CASE("data prefix", "datax: x\ndat: y\n\n", NO_EVENTS, .cut = 0);
    CASE("Event ignored", "Event: e\nID: 1\nRetry: 5\ndata: x\n\n", EVS(EV("message", "x", "")), .cut = 0);
    CASE("unknown fields ignored", "foo: bar\ndata: x\nbaz\n\n", EVS(EV("message", "x", "")), .cut = 0);
    /* A field line alone (even unknown) opens an event: ending there is a cut. */
    CASE("unknown field at end", "foo: bar\n", NO_EVENTS, .cut = 1);
}

TEST(test_data_buffer) {
    CASE("join with LF", "data: a\ndata: b\ndata: c\n\n", EVS(EV("message", "a\nb\nc", "")), .cut = 0);
    CASE("empty last line", "data: a\ndata:\n\n", EVS(EV("message", "a\n", "")), .cut = 0);
    CASE("empty first line", "data:\ndata: a\n\n", EVS(EV("message", "\na", "")), .cut = 0);
    CASE("LF in data", "data: a\n\ndata: \n\n", EVS(EV("message", "a", ""), EV("message", "", "")), .cut = 0);
    /* An empty data buffer dispatches nothing. */
    CASE("no data", "event: x\n\n", NO_EVENTS, .cut = 0);
    CASE("id only", "id: 1\n\n", NO_EVENTS, .last_id = "1");
    CASE("retry only", "retry: 5\n\n", NO_EVENTS, .has_retry = 1, .retry = 5);
    /* The buffer is reset after each dispatch. */
    CASE("reset", "data: a\n\ndata: b\n\n", EVS(EV("message", "a", ""), EV("message", "b", "")), .cut = 0);
}

TEST(test_event_type) {
    CASE("default message", "data: x\n\n", EVS(EV("message", "x", "")), .cut = 0);
    CASE("set type", "event: add\ndata: x\n\n", EVS(EV("add", "x", "")), .cut = 0);
    CASE("type after data", "data: x\nevent: add\n\n", EVS(EV("add", "x", "")), .cut = 0);
    CASE("last type wins", "event: a\nevent: b\ndata: x\n\n", EVS(EV("b", "x", "")), .cut = 0);
    CASE("empty type is message", "event:\ndata: x\n\n", EVS(EV("message", "x", "")), .cut = 0);
    CASE("type kept verbatim", "event:  A b\ndata: x\n\n", EVS(EV(" A b", "x", "")), .cut = 0);
    /* Cleared after every dispatch ... */
    CASE("type cleared", "event: a\ndata: x\n\ndata: y\n\n", EVS(EV("a", "x", ""), EV("message", "y", "")), .cut = 0);
    /* ... also when nothing was dispatched. */
    CASE("type cleared without data", "event: a\n\ndata: y\n\n", EVS(EV("message", "y", "")), .cut = 0);
}

TEST(test_last_event_id) {
    CASE("id given", "id: 1\ndata: a\n\n", EVS(EV("message", "a", "1")), .last_id = "1");
    CASE("id after data", "data: a\nid: 7\n\n", EVS(EV("message", "a", "7")), .last_id = "7");
    CASE("id persists", "id: 1\ndata: a\n\ndata: b\n\n", EVS(EV("message", "a", "1"), EV("message", "b", "1")), .last_id = "1");
    CASE("id replaced", "id: 1\ndata: a\n\nid: 2\ndata: b\n\n", EVS(EV("message", "a", "1"), EV("message", "b", "2")), .last_id = "2");
    CASE("last id in event wins", "id: 1\nid: 2\ndata: a\n\n", EVS(EV("message", "a", "2")), .last_id = "2");
    /* Committed at every blank line, even one that dispatches nothing. */
    CASE("committed without data", "id: 5\n\ndata: a\n\n", EVS(EV("message", "a", "5")), .last_id = "5");
    /* An empty id resets it. */
    CASE("reset by id:", "id: 1\ndata: a\n\nid:\ndata: b\n\n", EVS(EV("message", "a", "1"), EV("message", "b", "")), .last_id = NULL);
    CASE("reset by id", "id: 1\ndata: a\n\nid\ndata: b\n\n", EVS(EV("message", "a", "1"), EV("message", "b", "")), .last_id = NULL);
    /* An id containing NUL is ignored. */
    CASE("NUL id ignored", "id: 1\ndata: a\n\nid: 2\0" "3\ndata: b\n\n", EVS(EV("message", "a", "1"), EV("message", "b", "1")), .last_id = "1");
    CASE("NUL-only id ignored", "id: 4\n\nid: \0\ndata: b\n\n", EVS(EV("message", "b", "4")), .last_id = "4");
    CASE("id value verbatim", "id:  a b \ndata: x\n\n", EVS(EV("message", "x", " a b ")), .last_id = " a b ");
    /* Not committed by an unterminated event. */
    CASE("uncommitted at end", "id: 1\ndata: a\n\nid: 2\ndata: b\n", EVS(EV("message", "a", "1")), .last_id = "1", .cut = 1);
    CASE("uncommitted id only", "id: 9\n", NO_EVENTS, .last_id = NULL, .cut = 1);
}

TEST(test_retry) {
    CASE("retry", "retry: 1500\n\n", NO_EVENTS, .has_retry = 1, .retry = 1500);
    CASE("retry 0", "retry: 0\n\n", NO_EVENTS, .has_retry = 1, .retry = 0);
    CASE("retry no space", "retry:42\n\n", NO_EVENTS, .has_retry = 1, .retry = 42);
    CASE("leading zeros", "retry: 007\n\n", NO_EVENTS, .has_retry = 1, .retry = 7);
    CASE("applies at once", "retry: 3000\n", NO_EVENTS, .has_retry = 1, .retry = 3000, .cut = 1);
    CASE("later wins", "retry: 1\n\nretry: 2\n\n", NO_EVENTS, .has_retry = 1, .retry = 2);
    CASE("with data", "retry: 10\ndata: a\n\n", EVS(EV("message", "a", "")), .has_retry = 1, .retry = 10);
    /* Anything but ASCII digits only is ignored. */
    CASE("letters", "retry: 15a\n\n", NO_EVENTS, .has_retry = 0);
    CASE("negative", "retry: -1\n\n", NO_EVENTS, .has_retry = 0);
    CASE("plus", "retry: +1\n\n", NO_EVENTS, .has_retry = 0);
    CASE("decimal", "retry: 1.5\n\n", NO_EVENTS, .has_retry = 0);
    CASE("two spaces", "retry:  100\n\n", NO_EVENTS, .has_retry = 0);
    CASE("trailing space", "retry: 100 \n\n", NO_EVENTS, .has_retry = 0);
    CASE("empty", "retry:\n\nretry\n\nretry: \n\n", NO_EVENTS, .has_retry = 0);
    CASE("fullwidth digit", "retry: \xEF\xBC\x91\n\n", NO_EVENTS, .has_retry = 0);
    CASE("NUL", "retry: 1\0" "2\n\n", NO_EVENTS, .has_retry = 0);
    CASE("invalid keeps valid", "retry: 5\n\nretry: x\n\n", NO_EVENTS, .has_retry = 1, .retry = 5);
    CASE("Retry", "Retry: 5\n\n", NO_EVENTS, .has_retry = 0);
    /* Past 2^64-1 it saturates rather than wraps. */
    CASE("saturates", "retry: 99999999999999999999999\n\n", NO_EVENTS, .has_retry = 1, .retry = UINT64_MAX);
    CASE("2^64-1", "retry: 18446744073709551615\n\n", NO_EVENTS, .has_retry = 1, .retry = UINT64_MAX);
    CASE("2^64", "retry: 18446744073709551616\n\n", NO_EVENTS, .has_retry = 1, .retry = UINT64_MAX);
    CASE("2^64-2", "retry: 18446744073709551614\n\n", NO_EVENTS, .has_retry = 1, .retry = UINT64_MAX - 1);
}

TEST(test_end_of_stream) {
    CASE("unterminated discarded", "data: a\n", NO_EVENTS, .cut = 1);
    CASE("no line end", "data: a", NO_EVENTS, .cut = 1);
    CASE("half a line end", "data: a\r\n", NO_EVENTS, .cut = 1);
    CASE("after an event", "data: a\n\ndata: b", EVS(EV("message", "a", "")), .cut = 1);
    CASE("clean end", "data: a\n\n", EVS(EV("message", "a", "")), .cut = 0);
    CASE("clean CR end", "data: a\r\r", EVS(EV("message", "a", "")), .cut = 0);
    CASE("event without data at end", "event: x\n", NO_EVENTS, .cut = 1);
}

TEST(test_binary) {
    CASE("NUL in data", "data: a\0b\n\n", EVS(EV("message", "a\0b", "")), .cut = 0);
    CASE("NUL-only data", "data: \0\n\n", EVS(EV("message", "\0", "")), .cut = 0);
    CASE("NUL in type", "event: a\0b\ndata: x\n\n", EVS(EV("a\0b", "x", "")), .cut = 0);
    CASE("NUL field name", "da\0ta: x\n\n", NO_EVENTS, .cut = 0);
    CASE("high bytes", "data: \xff\xfe\x80\n\n", EVS(EV("message", "\xff\xfe\x80", "")), .cut = 0);
    CASE("UTF-8 kept", "data: h\xC3\xA9llo \xF0\x9F\x98\x80\n\n", EVS(EV("message", "h\xC3\xA9llo \xF0\x9F\x98\x80", "")), .cut = 0);
    CASE("NUL comment", ":\0x\n", EVS(COMMENT("\0x")), .comments = 1);
}

TEST(test_size_cap) {
    /* The cap counts the held bytes of one event (data with its LFs, plus
     * the type) and of one line. */
    CASE("line at the cap", "data: 0123456789\n\n", EVS(EV("message", "0123456789", "")), .max_event = 16);
    CASE("line over the cap", "data: 0123456789a\n\n", NO_EVENTS, .max_event = 16, .status = SSE_ERR_TOO_LARGE);
    CASE("events before the error", "data: a\n\ndata: 0123456789abcdef\n\n", EVS(EV("message", "a", "")), .max_event = 16, .status = SSE_ERR_TOO_LARGE);
    CASE("data lines add up", "data: 01234567\ndata: 01234567\n\n", NO_EVENTS, .max_event = 16, .status = SSE_ERR_TOO_LARGE);
    CASE("data lines fit", "data: 0123456\ndata: 0123456\n\n", EVS(EV("message", "0123456\n0123456", "")), .max_event = 16);
    CASE("type counts", "event: 012345678\ndata: 0123456\n\n", NO_EVENTS, .max_event = 16, .status = SSE_ERR_TOO_LARGE);
    CASE("type after data counts", "data: 0123456\nevent: 012345678\n\n", NO_EVENTS, .max_event = 16, .status = SSE_ERR_TOO_LARGE);
    CASE("type fits", "event: 012345678\ndata: 12345\n\n", EVS(EV("012345678", "12345", "")), .max_event = 16);
    CASE("reset per event", "data: 0123456789\n\ndata: 0123456789\n\n", EVS(EV("message", "0123456789", ""), EV("message", "0123456789", "")), .max_event = 16);
    /* A single line over the cap fails whatever its field, however it is
     * chunked (one chunk holding the whole line included). */
    CASE("long comment", ":0123456789abcdefg\n", NO_EVENTS, .max_event = 16, .status = SSE_ERR_TOO_LARGE);
    CASE("long unknown field", "x: 0123456789abcdef\n", NO_EVENTS, .max_event = 16, .status = SSE_ERR_TOO_LARGE);
    CASE("long id", "id: 0123456789abcdef\n\n", NO_EVENTS, .max_event = 16, .status = SSE_ERR_TOO_LARGE);
    CASE("long unterminated line", "data: a\n\ndata: 0123456789abcdef", EVS(EV("message", "a", "")), .max_event = 16, .status = SSE_ERR_TOO_LARGE);
    CASE("tiny cap", "data\n\n", NO_EVENTS, .max_event = 1, .status = SSE_ERR_TOO_LARGE);
    CASE("tiny cap blank lines", "\n\r\n\r", NO_EVENTS, .max_event = 1);
}

/* ------------------------------------------------------------------ */
/* Parser: behaviour a stream-in/events-out case cannot show            */

typedef struct {
    size_t count;
} counter;

static int count_sink(void *ud, const sse_event *ev) {
    (void)ev;
    ((counter *)ud)->count++;
    return 0;
}

TEST(test_cr_at_chunk_end_dispatches_now) {
    sse_parser p;
    counter c = {0};
    sse_init(&p, 0, 0);
    /* A CR-only stream: the blank line's CR is the last byte seen; the
     * event must not wait for the next chunk. */
    CHECK_EQ_U(FEEDL(&p, "data: x\r\r", count_sink, &c), SSE_OK);
    CHECK_EQ_U(c.count, 1);
    CHECK_EQ_U(FEEDL(&p, "data: y\r", count_sink, &c), SSE_OK);
    CHECK_EQ_U(FEEDL(&p, "\r", count_sink, &c), SSE_OK);
    CHECK_EQ_U(c.count, 2);
    /* The LF of a CRLF split across chunks (with an empty chunk between)
     * is not a second line end. */
    CHECK_EQ_U(FEEDL(&p, "data: z\r", count_sink, &c), SSE_OK);
    CHECK_EQ_U(FEEDL(&p, "", count_sink, &c), SSE_OK);
    CHECK_EQ_U(FEEDL(&p, "\n", count_sink, &c), SSE_OK);
    CHECK_EQ_U(c.count, 2);
    CHECK_EQ_U(FEEDL(&p, "\r", count_sink, &c), SSE_OK);
    CHECK_EQ_U(c.count, 3);
    /* Only one LF is swallowed. */
    CHECK_EQ_U(FEEDL(&p, "data: w\r", count_sink, &c), SSE_OK);
    CHECK_EQ_U(FEEDL(&p, "\n\n", count_sink, &c), SSE_OK);
    CHECK_EQ_U(c.count, 4);
    CHECK_EQ_U(p.dispatched, 4);
    {
        int pending = -1;
        CHECK_EQ_U(sse_finish(&p, &pending), SSE_OK);
        CHECK_EQ_U(pending, 0);
    }
    sse_free(&p);
}

TEST(test_errors_sticky) {
    sse_parser p;
    recorder r;
    int pending = -1;
    rec_init(&r);
    sse_init(&p, 16, 0);
    CHECK_EQ_U(FEEDL(&p, "data: ok\n\n", rec_sink, &r), SSE_OK);
    CHECK_EQ_U(r.n, 1);
    /* The event before the oversized line in the same chunk is delivered. */
    CHECK_EQ_U(FEEDL(&p, "data: 2\n\ndata: 0123456789abcdef", rec_sink, &r),
               SSE_ERR_TOO_LARGE);
    CHECK_EQ_U(r.n, 2);
    CHECK_EQ_U(p.status, SSE_ERR_TOO_LARGE);
    /* Sticky: later feeds fail the same way and deliver nothing. */
    CHECK_EQ_U(FEEDL(&p, "\n\ndata: 3\n\n", rec_sink, &r), SSE_ERR_TOO_LARGE);
    CHECK_EQ_U(FEEDL(&p, "", rec_sink, &r), SSE_ERR_TOO_LARGE);
    CHECK_EQ_U(r.n, 2);
    CHECK_EQ_U(sse_finish(&p, &pending), SSE_ERR_TOO_LARGE);
    CHECK_EQ_U(sse_finish(&p, &pending), SSE_ERR_TOO_LARGE);
    /* After finish, a feed is refused as such, error or not. */
    CHECK_EQ_U(FEEDL(&p, "data: 4\n\n", rec_sink, &r), SSE_ERR_FINISHED);
    CHECK_EQ_U(r.n, 2);
    CHECK_EQ_U(p.status, SSE_ERR_TOO_LARGE);
    CHECK(strlen(sse_strerror(SSE_ERR_TOO_LARGE)) > 0);
    sse_free(&p);
    rec_free(&r);
}

TEST(test_default_cap) {
    sse_parser p;
    recorder r;
    size_t n = SSE_DEFAULT_MAX_EVENT;
    char *big = malloc(n + 16);
    CHECK_EQ_U(SSE_DEFAULT_MAX_EVENT, 8u * 1024u * 1024u);
    if (!big) abort();
    sse_init(&p, 0, 0);
    CHECK_EQ_U(p.max_event, SSE_DEFAULT_MAX_EVENT);
    sse_free(&p);

    /* A data line of 8 MiB - 1 bytes (held line and held data both under
     * the cap) is accepted ... */
    rec_init(&r);
    sse_init(&p, 0, 0);
    memcpy(big, "data:", 5);
    memset(big + 5, 'x', n - 6);
    memcpy(big + n - 1, "\n\n", 2);
    /* a line of n - 1 bytes: fits */
    CHECK_EQ_U(sse_feed(&p, big, n + 1, rec_sink, &r), SSE_OK);
    CHECK_EQ_U(r.n, 1);
    if (r.n == 1) CHECK_EQ_U(r.v[0].data_len, n - 6);
    sse_free(&p);
    rec_free(&r);

    /* ... and a line of n + 1 bytes does not. */
    rec_init(&r);
    sse_init(&p, 0, 0);
    memcpy(big, "data:", 5);
    memset(big + 5, 'x', n - 4);
    memcpy(big + n + 1, "\n\n", 2);
    CHECK_EQ_U(sse_feed(&p, big, n + 3, rec_sink, &r), SSE_ERR_TOO_LARGE);
    CHECK_EQ_U(r.n, 0);
    sse_free(&p);
    rec_free(&r);
    free(big);
}

TEST(test_sink_stop) {
    sse_parser p;
    recorder r;
    rec_init(&r);
    r.stop_at = 1; /* refuse the second event */
    sse_init(&p, 0, 0);
    CHECK_EQ_U(FEEDL(&p, "data: a\n\ndata: b\n\ndata: c\n\n", rec_sink, &r),
               SSE_ERR_CALLBACK);
    CHECK_EQ_U(r.n, 1);
    CHECK_EQ_U(FEEDL(&p, "data: d\n\n", rec_sink, &r), SSE_ERR_CALLBACK);
    CHECK_EQ_U(r.n, 1);
    sse_free(&p);
    rec_free(&r);

    /* A refused comment stops the feed too. */
    rec_init(&r);
    r.stop_at = 0;
    sse_init(&p, 0, 1);
    CHECK_EQ_U(FEEDL(&p, ":c\ndata: a\n\n", rec_sink, &r), SSE_ERR_CALLBACK);
    CHECK_EQ_U(r.n, 0);
    sse_free(&p);
    rec_free(&r);

    /* A NULL sink is allowed: events are counted and dropped. */
    sse_init(&p, 0, 1);
    CHECK_EQ_U(FEEDL(&p, ":c\ndata: a\n\nid: 3\n\n", NULL, NULL), SSE_OK);
    CHECK_EQ_U(p.dispatched, 1);
    {
        size_t len;
        const char *id = sse_last_event_id(&p, &len);
        CHECK_LIT(id, len, "3");
    }
    sse_free(&p);
}

TEST(test_finish) {
    sse_parser p;
    recorder r;
    int pending = -1;
    size_t len = 99;
    uint64_t ms = 12345;
    const char *id;

    sse_init(&p, 0, 0);
    /* A fresh parser: empty id (never NULL), no retry, clean finish. */
    id = sse_last_event_id(&p, &len);
    CHECK(id != NULL);
    CHECK_EQ_U(len, 0);
    CHECK_EQ_U(sse_retry(&p, &ms), 0);
    CHECK_EQ_U(ms, 12345);
    CHECK_EQ_U(sse_finish(&p, &pending), SSE_OK);
    CHECK_EQ_U(pending, 0);
    CHECK_EQ_U(sse_finish(&p, NULL), SSE_OK);
    CHECK_EQ_U(FEEDL(&p, "data: a\n\n", NULL, NULL), SSE_ERR_FINISHED);
    CHECK_EQ_U(FEEDL(&p, "", NULL, NULL), SSE_ERR_FINISHED);
    CHECK_EQ_U(p.dispatched, 0);
    sse_free(&p);

    /* The discarded event is really gone: state after finish is kept
     * only for last id and retry. */
    rec_init(&r);
    sse_init(&p, 0, 0);
    CHECK_EQ_U(FEEDL(&p, "id: 1\nretry: 9\ndata: a\n\nid: 2\ndata: b", rec_sink, &r),
               SSE_OK);
    CHECK_EQ_U(sse_finish(&p, &pending), SSE_OK);
    CHECK_EQ_U(pending, 1);
    CHECK_EQ_U(r.n, 1);
    /* A second finish reports the same. */
    pending = -1;
    CHECK_EQ_U(sse_finish(&p, &pending), SSE_OK);
    CHECK_EQ_U(pending, 1);
    id = sse_last_event_id(&p, &len);
    CHECK_LIT(id, len, "1");
    CHECK_EQ_U(sse_retry(&p, &ms), 1);
    CHECK_EQ_U(ms, 9);
    sse_free(&p);
    rec_free(&r);

    /* A partial BOM at the end is a cut; a whole one is not. */
    sse_init(&p, 0, 0);
    CHECK_EQ_U(FEEDL(&p, "\xEF", NULL, NULL), SSE_OK);
    CHECK_EQ_U(sse_finish(&p, &pending), SSE_OK);
    CHECK_EQ_U(pending, 1);
    CHECK_EQ_U(sse_finish(&p, &pending), SSE_OK);
    CHECK_EQ_U(pending, 1);
    sse_free(&p);
    /* An unterminated line (no field processed yet) too. */
    sse_init(&p, 0, 0);
    CHECK_EQ_U(FEEDL(&p, "data: a", NULL, NULL), SSE_OK);
    CHECK_EQ_U(sse_finish(&p, &pending), SSE_OK);
    CHECK_EQ_U(pending, 1);
    CHECK_EQ_U(sse_finish(&p, &pending), SSE_OK);
    CHECK_EQ_U(pending, 1);
    sse_free(&p);
    sse_init(&p, 0, 0);
    CHECK_EQ_U(FEEDL(&p, "\xEF\xBB\xBF", NULL, NULL), SSE_OK);
    CHECK_EQ_U(sse_finish(&p, &pending), SSE_OK);
    CHECK_EQ_U(pending, 0);
    sse_free(&p);
}

TEST(test_strerror) {
    const sse_status all[] = {SSE_OK, SSE_ERR_TOO_LARGE, SSE_ERR_NOMEM, SSE_ERR_CALLBACK,
                              SSE_ERR_FINISHED};
    size_t i, j;
    for (i = 0; i < sizeof all / sizeof all[0]; i++) {
        CHECK(sse_strerror(all[i]) != NULL && sse_strerror(all[i])[0] != '\0');
        for (j = 0; j < i; j++) CHECK(strcmp(sse_strerror(all[i]), sse_strerror(all[j])) != 0);
    }
    CHECK(strstr(sse_strerror(SSE_ERR_TOO_LARGE), "limit") != NULL);
    CHECK(strcmp(sse_strerror((sse_status)77), "unknown error") == 0);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Budget for the linear-time sanity checks: generous, since these also run
 * under valgrind.  Quadratic behaviour on 1 MiB would take hours. */
#define TIME_BUDGET_S 60.0

TEST(test_linear_one_byte_chunks) {
    const size_t n = 1u << 20;
    sse_parser p;
    recorder r;
    size_t i, cap_seen = 0, grows = 0, copied = 0;
    double t0 = now_s(), dt;
    const char *prefix = "data: ";
    rec_init(&r);
    sse_init(&p, 0, 0);
    for (i = 0; i < 6; i++) CHECK_EQ_U(sse_feed(&p, prefix + i, 1, rec_sink, &r), SSE_OK);
    for (i = 0; i < n; i++) {
        char c = (char)('a' + i % 26);
        if (sse_feed(&p, &c, 1, rec_sink, &r) != SSE_OK) break;
        /* Bytes copied: one per append, plus the whole line at each
         * reallocation (an upper bound on what realloc moves). */
        copied++;
        if (p.line.cap != cap_seen) {
            copied += p.line.len;
            cap_seen = p.line.cap;
            grows++;
        }
    }
    CHECK_EQ_U(i, n);
    CHECK_EQ_U(r.n, 0);
    CHECK_EQ_U(p.line.len, n + 6);
    /* Geometric growth: about log2(1 MiB / 64) reallocations, O(n) copies. */
    CHECK(grows <= 20);
    CHECK(copied <= 4 * n);
    CHECK(p.line.cap <= 2 * (n + 6));
    CHECK_EQ_U(FEEDL(&p, "\n", rec_sink, &r), SSE_OK);
    CHECK_EQ_U(FEEDL(&p, "\n", rec_sink, &r), SSE_OK);
    dt = now_s() - t0;
    CHECK(dt < TIME_BUDGET_S);
    CHECK_EQ_U(r.n, 1);
    if (r.n == 1) {
        int same = r.v[0].data_len == n;
        for (i = 0; same && i < n; i++) same = r.v[0].data[i] == (char)('a' + i % 26);
        CHECK(same);
    }
    /* Memory of the huge line and event is given back afterwards. */
    CHECK(p.line.cap < n);
    CHECK(p.data.cap < n);
    sse_free(&p);
    rec_free(&r);
    printf("   1 MiB line in 1-byte chunks: %.3f s, %zu reallocations, %zu bytes copied\n",
           dt, grows, copied);
}

TEST(test_linear_many_lines) {
    /* 2^17 LF-terminated data lines and one CR at the very end, in one
     * chunk: the CR search must not be repeated for every line; and the
     * same lines CRLF-terminated fed in 3-byte chunks. */
    const size_t lines = 1u << 17;
    size_t len = lines * 7 + 2, i;
    char *s = malloc(len);
    recorder r;
    sse_parser p;
    double t0 = now_s();
    if (!s) abort();
    for (i = 0; i < lines; i++) memcpy(s + i * 7, "data:x\n", 7);
    memcpy(s + lines * 7, "\r\r", 2);
    rec_init(&r);
    sse_init(&p, 0, 0);
    CHECK_EQ_U(sse_feed(&p, s, len, rec_sink, &r), SSE_OK);
    CHECK_EQ_U(r.n, 1);
    if (r.n == 1) CHECK_EQ_U(r.v[0].data_len, lines * 2 - 1);
    sse_free(&p);
    rec_free(&r);
    free(s);

    len = lines * 8 + 2;
    s = malloc(len);
    if (!s) abort();
    for (i = 0; i < lines; i++) memcpy(s + i * 8, "data:y\r\n", 8);
    memcpy(s + lines * 8, "\r\n", 2);
    rec_init(&r);
    sse_init(&p, 0, 0);
    for (i = 0; i < len; i += 3)
        if (sse_feed(&p, s + i, len - i < 3 ? len - i : 3, rec_sink, &r) != SSE_OK) break;
    CHECK(i >= len);
    CHECK_EQ_U(r.n, 1);
    if (r.n == 1) CHECK_EQ_U(r.v[0].data_len, lines * 2 - 1);
    sse_free(&p);
    rec_free(&r);
    free(s);
    CHECK(now_s() - t0 < TIME_BUDGET_S);
}

/* ------------------------------------------------------------------ */
/* evq                                                                  */

static sse_event mk_ev(sse_kind kind, const char *type, size_t tl, const char *data,
                       size_t dl, const char *id, size_t il) {
    sse_event e;
    e.kind = kind;
    e.type = type;
    e.type_len = tl;
    e.data = data;
    e.data_len = dl;
    e.id = id;
    e.id_len = il;
    return e;
}

TEST(test_evq_fifo) {
    evq q;
    sse_event e, got;
    evq_init(&q);
    CHECK_EQ_U(evq_bytes(&q), 0);
    CHECK_EQ_U(evq_peek(&q, &got), 0);
    evq_pop(&q); /* popping an empty queue is harmless */
    CHECK_EQ_U(q.count, 0);

    e = mk_ev(SSE_KIND_EVENT, "message", 7, "a\0b", 3, "id1", 3);
    CHECK_EQ_U(evq_push(&q, &e), 0);
    e = mk_ev(SSE_KIND_COMMENT, "", 0, " ping", 5, "", 0);
    CHECK_EQ_U(evq_push(&q, &e), 0);
    e = mk_ev(SSE_KIND_EVENT, "t", 1, "", 0, "", 0);
    CHECK_EQ_U(evq_push(&q, &e), 0);
    CHECK_EQ_U(q.count, 3);
    CHECK(evq_bytes(&q) >= 3 + 7 + 3 + 3 + 5 + 1);

    CHECK_EQ_U(evq_peek(&q, &got), 1);
    CHECK_EQ_U(got.kind, SSE_KIND_EVENT);
    CHECK_LIT(got.type, got.type_len, "message");
    CHECK_LIT(got.data, got.data_len, "a\0b");
    CHECK_LIT(got.id, got.id_len, "id1");
    /* peek does not consume */
    CHECK_EQ_U(evq_peek(&q, &got), 1);
    CHECK_LIT(got.id, got.id_len, "id1");
    evq_pop(&q);
    CHECK_EQ_U(evq_peek(&q, &got), 1);
    CHECK_EQ_U(got.kind, SSE_KIND_COMMENT);
    CHECK_LIT(got.data, got.data_len, " ping");
    CHECK_EQ_U(got.type_len, 0);
    CHECK_EQ_U(got.id_len, 0);
    evq_pop(&q);
    CHECK_EQ_U(evq_peek(&q, &got), 1);
    CHECK_LIT(got.type, got.type_len, "t");
    CHECK_EQ_U(got.data_len, 0);
    evq_pop(&q);
    CHECK_EQ_U(q.count, 0);
    CHECK_EQ_U(evq_bytes(&q), 0);
    CHECK_EQ_U(evq_peek(&q, &got), 0);
    evq_free(&q);
    CHECK(q.buf == NULL);
    evq_free(&q); /* twice is harmless */
}

TEST(test_evq_growth_and_reuse) {
    evq q;
    sse_event e, got;
    size_t i, cap_after_first;
    char *big = malloc(100000);
    if (!big) abort();
    for (i = 0; i < 100000; i++) big[i] = (char)(i * 7);
    evq_init(&q);
    /* A record larger than the initial capacity. */
    e = mk_ev(SSE_KIND_EVENT, "message", 7, big, 100000, "x", 1);
    CHECK_EQ_U(evq_push(&q, &e), 0);
    CHECK(q.cap >= 100000);
    CHECK_EQ_U(evq_peek(&q, &got), 1);
    CHECK_MEM(got.data, got.data_len, big, 100000);
    evq_pop(&q);
    CHECK_EQ_U(q.head, 0);
    CHECK_EQ_U(q.tail, 0);

    /* Drained as fast as it is filled, the queue does not grow. */
    cap_after_first = q.cap;
    for (i = 0; i < 10000; i++) {
        char d[16];
        int n = snprintf(d, sizeof d, "%zu", i);
        e = mk_ev(SSE_KIND_EVENT, "m", 1, d, (size_t)n, "", 0);
        if (evq_push(&q, &e) != 0) break;
        if (i % 2 == 1) { /* keep one queued across the pushes */
            evq_peek(&q, &got);
            n = snprintf(d, sizeof d, "%zu", i - 1);
            if (!CHECK_MEM(got.data, got.data_len, d, (size_t)n)) break;
            evq_pop(&q);
            evq_peek(&q, &got);
            n = snprintf(d, sizeof d, "%zu", i);
            if (!CHECK_MEM(got.data, got.data_len, d, (size_t)n)) break;
            evq_pop(&q);
        }
    }
    CHECK_EQ_U(i, 10000);
    CHECK_EQ_U(q.cap, cap_after_first);
    CHECK_EQ_U(q.count, 0);

    /* Many queued at once: grows, and comes out in order; a partly drained
     * queue slides its records to the front instead of growing. */
    for (i = 0; i < 5000; i++) {
        char d[16];
        int n = snprintf(d, sizeof d, "ev%zu", i);
        e = mk_ev(SSE_KIND_EVENT, "m", 1, d, (size_t)n, d, (size_t)n);
        if (evq_push(&q, &e) != 0) break;
    }
    CHECK_EQ_U(q.count, 5000);
    for (i = 0; i < 5000; i++) {
        char d[16];
        int n = snprintf(d, sizeof d, "ev%zu", i);
        if (!evq_peek(&q, &got)) break;
        if (!CHECK_MEM(got.data, got.data_len, d, (size_t)n)) break;
        if (!CHECK_MEM(got.id, got.id_len, d, (size_t)n)) break;
        evq_pop(&q);
    }
    CHECK_EQ_U(i, 5000);
    CHECK_EQ_U(evq_bytes(&q), 0);
    evq_free(&q);
    free(big);
}

TEST(test_evq_as_parser_sink) {
    sse_parser p;
    evq q;
    sse_event got;
    static const char s[] = ": hi\nid: 7\nevent: up\ndata: a\0b\ndata: c\n\ndata: d\n\n";
    size_t len = sizeof s - 1;
    evq_init(&q);
    sse_init(&p, 0, 1);
    CHECK_EQ_U(sse_feed(&p, s, len, evq_sink, &q), SSE_OK);
    CHECK_EQ_U(q.count, 3);
    CHECK_EQ_U(evq_peek(&q, &got), 1);
    CHECK_EQ_U(got.kind, SSE_KIND_COMMENT);
    CHECK_LIT(got.data, got.data_len, " hi");
    evq_pop(&q);
    CHECK_EQ_U(evq_peek(&q, &got), 1);
    CHECK_EQ_U(got.kind, SSE_KIND_EVENT);
    CHECK_LIT(got.type, got.type_len, "up");
    CHECK_LIT(got.data, got.data_len, "a\0b\nc");
    CHECK_LIT(got.id, got.id_len, "7");
    evq_pop(&q);
    CHECK_EQ_U(evq_peek(&q, &got), 1);
    CHECK_LIT(got.type, got.type_len, "message");
    CHECK_LIT(got.data, got.data_len, "d");
    CHECK_LIT(got.id, got.id_len, "7");
    evq_pop(&q);
    CHECK_EQ_U(evq_peek(&q, &got), 0);
    sse_free(&p);
    evq_free(&q);
}

/* ------------------------------------------------------------------ */
/* fastjson                                                             */

static fj_result fj(const char *s, size_t n, const char **direct, size_t *dlen, bee_buf *out) {
    return fastjson_single_string(s, n, "text", 4, direct, dlen, out);
}

#define FJ(lit, d, dl, out) fj(lit, sizeof(lit) - 1, d, dl, out)

TEST(test_fastjson_direct) {
    const char *d = NULL;
    size_t dl = 0;
    bee_buf out = {NULL, 0, 0};
    const char *s = "{\"text\":\"hello\"}";
    CHECK_EQ_U(fj(s, strlen(s), &d, &dl, &out), FJ_DIRECT);
    CHECK_LIT(d, dl, "hello");
    CHECK(d == s + 9); /* a view into the input, no copy */
    CHECK_EQ_U(out.len, 0);
    CHECK_EQ_U(FJ(" \t\r\n{ \"text\" :\n\"a b\" } \n", &d, &dl, &out), FJ_DIRECT);
    CHECK_LIT(d, dl, "a b");
    CHECK_EQ_U(FJ("{\"text\":\"\"}", &d, &dl, &out), FJ_DIRECT);
    CHECK_EQ_U(dl, 0);
    CHECK_EQ_U(FJ("{\"text\":\"h\xC3\xA9 \xF0\x9F\x98\x80\"}", &d, &dl, &out), FJ_DIRECT);
    CHECK_LIT(d, dl, "h\xC3\xA9 \xF0\x9F\x98\x80");
    /* Another key, as asked for. */
    CHECK_EQ_U(fastjson_single_string("{\"k\":\"v\"}", 9, "k", 1, &d, &dl, &out), FJ_DIRECT);
    CHECK_LIT(d, dl, "v");
    bee_buf_free(&out);
}

TEST(test_fastjson_escaped) {
    const char *d = NULL;
    size_t dl = 0;
    bee_buf out = {NULL, 0, 0};
    CHECK_EQ_U(FJ("{\"text\":\"a\\\"b\"}", &d, &dl, &out), FJ_DECODED);
    CHECK_LIT(out.ptr, out.len, "a\"b");
    CHECK_EQ_U(FJ("{\"text\":\"\\\\ \\/ \\b\\f\\n\\r\\t\"}", &d, &dl, &out), FJ_DECODED);
    CHECK_LIT(out.ptr, out.len, "\\ / \b\f\n\r\t");
    CHECK_EQ_U(FJ("{\"text\":\"\\u0041\\u00e9\\u20AC\\u07FF\\u0800\\uFFFF\"}", &d, &dl, &out),
               FJ_DECODED);
    CHECK_LIT(out.ptr, out.len, "A\xC3\xA9\xE2\x82\xAC\xDF\xBF\xE0\xA0\x80\xEF\xBF\xBF");
    /* The buffer is reset for each call. */
    CHECK_EQ_U(FJ("{\"text\":\"x\\ny\"}", &d, &dl, &out), FJ_DECODED);
    CHECK_LIT(out.ptr, out.len, "x\ny");
    /* Surrogate pairs make one 4-byte UTF-8 sequence. */
    CHECK_EQ_U(FJ("{\"text\":\"\\ud83d\\ude00!\"}", &d, &dl, &out), FJ_DECODED);
    CHECK_LIT(out.ptr, out.len, "\xF0\x9F\x98\x80!");
    CHECK_EQ_U(FJ("{\"text\":\"\\uD800\\uDC00\\uDBFF\\uDFFF\"}", &d, &dl, &out), FJ_DECODED);
    CHECK_LIT(out.ptr, out.len, "\xF0\x90\x80\x80\xF4\x8F\xBF\xBF");
    /* \u0000 is a NUL byte in the value. */
    CHECK_EQ_U(FJ("{\"text\":\"a\\u0000b\"}", &d, &dl, &out), FJ_DECODED);
    CHECK_LIT(out.ptr, out.len, "a\0b");
    CHECK_EQ_U(FJ("{ \"text\" : \"\\\"\" }", &d, &dl, &out), FJ_DECODED);
    CHECK_LIT(out.ptr, out.len, "\"");
    bee_buf_free(&out);
}

TEST(test_fastjson_declined) {
    static const char *const declined[] = {
        "",
        " ",
        "{",
        "{}",
        "[\"text\"]",
        "\"text\"",
        "{\"text\":\"a\",\"x\":1}",  /* extra member */
        "{\"x\":1,\"text\":\"a\"}",  /* extra member first */
        "{\"text\":\"a\",\"text\":\"b\"}",
        "{\"txt\":\"a\"}",           /* other key */
        "{\"textx\":\"a\"}",
        "{\"Text\":\"a\"}",
        "{\"te\\u0078t\":\"a\"}",    /* escaped key: left to the decoder */
        "{text:\"a\"}",
        "{\"text\":1}",              /* non-string values */
        "{\"text\":null}",
        "{\"text\":true}",
        "{\"text\":{}}",
        "{\"text\":[\"a\"]}",
        "{\"text\" \"a\"}",
        "{\"text\":'a'}",
        "{\"text\":\"a\\x\"}",       /* bad escapes */
        "{\"text\":\"a\\u12\"}",
        "{\"text\":\"\\u12G4\"}",
        "{\"text\":\"\\u\"}",
        "{\"text\":\"\\ud83d\"}",    /* lone high surrogate */
        "{\"text\":\"\\ud83dx\"}",
        "{\"text\":\"\\ud83d\\u0041\"}",
        "{\"text\":\"\\ud83d\\ud83d\"}",
        "{\"text\":\"\\ude00\"}",    /* lone low surrogate */
        "{\"text\":\"a\\\"}",        /* escaped closing quote: unterminated */
        "{\"text\":\"a",
        "{\"text\":\"a\"",
        "{\"text\":\"a\"}x",         /* trailing garbage */
        "{\"text\":\"a\"}}",
        "{\"text\":\"a\"} {}",
        "{\"text\":\"a\"},",
        "{\"text\":\"a\tb\"}",       /* raw control characters */
        "{\"text\":\"a\nb\"}",
        "{\"text\":\"\\\x01\"}",
    };
    size_t i;
    bee_buf out = {NULL, 0, 0};
    for (i = 0; i < sizeof declined / sizeof declined[0]; i++) {
        const char *d = NULL;
        size_t dl = 0;
        fj_result r = fj(declined[i], strlen(declined[i]), &d, &dl, &out);
        if (!CHECK_EQ_U(r, FJ_DECLINED)) fprintf(stderr, "     input: %s\n", declined[i]);
    }
    {
        /* NUL inside the string is a control character too; a NUL after the
         * object is trailing garbage. */
        const char *d = NULL;
        size_t dl = 0;
        CHECK_EQ_U(FJ("{\"text\":\"a\0b\"}", &d, &dl, &out), FJ_DECLINED);
        CHECK_EQ_U(FJ("{\"text\":\"a\"}\0", &d, &dl, &out), FJ_DECLINED);
        /* The length bounds the parse: a valid object cut short declines. */
        CHECK_EQ_U(fj("{\"text\":\"a\"}", 11, &d, &dl, &out), FJ_DECLINED);
        CHECK_EQ_U(fj("{\"text\":\"a\"}", 5, &d, &dl, &out), FJ_DECLINED);
    }
    bee_buf_free(&out);
}

int main(void) {
    RUN(test_basic_events);
    RUN(test_bom);
    RUN(test_line_ends);
    RUN(test_comments);
    RUN(test_fields);
    RUN(test_data_buffer);
    RUN(test_event_type);
    RUN(test_last_event_id);
    RUN(test_retry);
    RUN(test_end_of_stream);
    RUN(test_binary);
    RUN(test_size_cap);
    RUN(test_cr_at_chunk_end_dispatches_now);
    RUN(test_errors_sticky);
    RUN(test_default_cap);
    RUN(test_sink_stop);
    RUN(test_finish);
    RUN(test_strerror);
    RUN(test_linear_one_byte_chunks);
    RUN(test_linear_many_lines);
    RUN(test_evq_fifo);
    RUN(test_evq_growth_and_reuse);
    RUN(test_evq_as_parser_sink);
    RUN(test_fastjson_direct);
    RUN(test_fastjson_escaped);
    RUN(test_fastjson_declined);
    printf("%lu stream chunkings checked\n", variants_run);
    return harness_done();
}
