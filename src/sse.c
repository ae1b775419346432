/*
 * Incremental SSE parser: see sse.h.  References are to the WHATWG HTML
 * standard, section "Interpreting an event stream".
 */
#include "sse.h"

#include <stdlib.h>
#include <string.h>

static const char BOM[3] = {'\xEF', '\xBB', '\xBF'};

/* Buffers above this size are given back after the event that grew them,
 * so one huge event does not pin its memory for the life of the stream. */
#define SSE_KEEP_CAP (256u * 1024u)

void sse_init(sse_parser *p, size_t max_event, int report_comments) {
    memset(p, 0, sizeof *p);
    p->max_event = max_event ? max_event : SSE_DEFAULT_MAX_EVENT;
    p->report_comments = report_comments;
}

void sse_free(sse_parser *p) {
    bee_buf_free(&p->line);
    bee_buf_free(&p->data);
    bee_buf_free(&p->type);
    bee_buf_free(&p->id_buf);
    bee_buf_free(&p->last_id);
}

static sse_status fail(sse_parser *p, sse_status s) {
    p->status = s;
    return s;
}

static int name_is(const char *name, size_t len, const char *lit, size_t lit_len) {
    return len == lit_len && memcmp(name, lit, len) == 0;
}

/* "If the line is empty (a blank line): Dispatch the event." */
static sse_status dispatch(sse_parser *p, sse_sink sink, void *ud) {
    sse_event ev;
    p->in_event = 0;
    /* Step 1: the last event ID string is committed even when nothing is
     * dispatched below. */
    if (p->id_dirty) {
        if (bee_buf_set(&p->last_id, p->id_buf.ptr, p->id_buf.len))
            return fail(p, SSE_ERR_NOMEM);
        p->id_dirty = 0;
    }
    /* Step 2: an empty data buffer dispatches nothing but still resets the
     * event type. */
    if (p->data.len == 0) {
        p->type.len = 0;
        return SSE_OK;
    }
    /* Step 3: every data line appended a LF; the last one is dropped. */
    p->data.len--;
    ev.kind = SSE_KIND_EVENT;
    if (p->type.len) {
        ev.type = p->type.ptr;
        ev.type_len = p->type.len;
    } else {
        ev.type = "message";
        ev.type_len = 7;
    }
    ev.data = p->data.len ? p->data.ptr : "";
    ev.data_len = p->data.len;
    ev.id = p->last_id.len ? p->last_id.ptr : "";
    ev.id_len = p->last_id.len;
    p->dispatched++;
    if (sink && sink(ud, &ev)) return fail(p, SSE_ERR_CALLBACK);
    p->data.len = 0;
    p->type.len = 0;
    bee_buf_trim(&p->data, SSE_KEEP_CAP);
    return SSE_OK;
}

static sse_status process_line(sse_parser *p, const char *line, size_t len,
                               sse_sink sink, void *ud) {
    const char *colon, *value;
    size_t name_len, value_len;

    if (len == 0) return dispatch(p, sink, ud);

    if (line[0] == ':') {
        if (p->report_comments && sink) {
            sse_event ev;
            ev.kind = SSE_KIND_COMMENT;
            ev.type = "";
            ev.type_len = 0;
            ev.data = line + 1;
            ev.data_len = len - 1;
            ev.id = "";
            ev.id_len = 0;
            if (sink(ud, &ev)) return fail(p, SSE_ERR_CALLBACK);
        }
        return SSE_OK;
    }

    colon = memchr(line, ':', len);
    if (colon) {
        name_len = (size_t)(colon - line);
        value = colon + 1;
        value_len = len - name_len - 1;
        /* Exactly one leading space is part of the syntax, not the value. */
        if (value_len && *value == ' ') {
            value++;
            value_len--;
        }
    } else {
        /* A line without a colon is a field whose value is empty. */
        name_len = len;
        value = line + len;
        value_len = 0;
    }
    p->in_event = 1;

    if (name_is(line, name_len, "data", 4)) {
        if (p->data.len + p->type.len + value_len + 1 > p->max_event)
            return fail(p, SSE_ERR_TOO_LARGE);
        if (bee_buf_reserve(&p->data, value_len + 1)) return fail(p, SSE_ERR_NOMEM);
        memcpy(p->data.ptr + p->data.len, value, value_len);
        p->data.len += value_len;
        p->data.ptr[p->data.len++] = '\n';
    } else if (name_is(line, name_len, "event", 5)) {
        if (p->data.len + value_len > p->max_event) return fail(p, SSE_ERR_TOO_LARGE);
        if (bee_buf_set(&p->type, value, value_len)) return fail(p, SSE_ERR_NOMEM);
    } else if (name_is(line, name_len, "id", 2)) {
        /* An id containing NUL is ignored: it could not round-trip through
         * the Last-Event-ID header. */
        if (!memchr(value, '\0', value_len)) {
            if (bee_buf_set(&p->id_buf, value, value_len)) return fail(p, SSE_ERR_NOMEM);
            p->id_dirty = 1;
        }
    } else if (name_is(line, name_len, "retry", 5)) {
        uint64_t ms = 0;
        size_t i;
        int saturated = 0;
        for (i = 0; i < value_len; i++) {
            unsigned d = (unsigned char)value[i] - '0';
            if (d > 9) break;
            if (ms > (UINT64_MAX - d) / 10) saturated = 1;
            else ms = ms * 10 + d;
        }
        if (value_len > 0 && i == value_len) {
            p->retry_ms = saturated ? UINT64_MAX : ms;
            p->has_retry = 1;
        }
    }
    /* Any other field name is ignored (names are case-sensitive). */
    return SSE_OK;
}

/* Feeds bytes that are known not to start with a pending BOM. */
static sse_status feed_lines(sse_parser *p, const char *s, size_t len,
                             sse_sink sink, void *ud) {
    const char *e = s + len;
    /* Next CR and LF at or after s, cached so that a stream using only one
     * kind of line end scans for the other kind once per chunk, not once
     * per line.  NULL means "none before e". */
    const char *next_cr = NULL, *next_lf = NULL;
    int cr_known = 0, lf_known = 0;
    sse_status st;

    if (p->last_was_cr && s < e) {
        /* The CR that ended the previous chunk already ended its line; a LF
         * here is the second half of that CRLF. */
        p->last_was_cr = 0;
        if (*s == '\n') s++;
    }

    while (s < e) {
        const char *end;
        if (!cr_known || (next_cr && next_cr < s)) {
            next_cr = memchr(s, '\r', (size_t)(e - s));
            cr_known = 1;
        }
        if (!lf_known || (next_lf && next_lf < s)) {
            next_lf = memchr(s, '\n', (size_t)(e - s));
            lf_known = 1;
        }
        if (next_cr && (!next_lf || next_cr < next_lf)) end = next_cr;
        else end = next_lf;

        if (!end) {
            size_t n = (size_t)(e - s);
            if (p->line.len + n > p->max_event) return fail(p, SSE_ERR_TOO_LARGE);
            if (bee_buf_append(&p->line, s, n)) return fail(p, SSE_ERR_NOMEM);
            return SSE_OK;
        }

        if (p->line.len) {
            size_t n = (size_t)(end - s);
            if (p->line.len + n > p->max_event) return fail(p, SSE_ERR_TOO_LARGE);
            if (bee_buf_append(&p->line, s, n)) return fail(p, SSE_ERR_NOMEM);
            st = process_line(p, p->line.ptr, p->line.len, sink, ud);
            p->line.len = 0;
            bee_buf_trim(&p->line, SSE_KEEP_CAP);
        } else {
            /* The same cap as on a line carried between chunks, so that
             * the outcome does not depend on where the chunks were cut. */
            if ((size_t)(end - s) > p->max_event) return fail(p, SSE_ERR_TOO_LARGE);
            st = process_line(p, s, (size_t)(end - s), sink, ud);
        }
        if (st != SSE_OK) return st;

        if (*end == '\r') {
            if (end + 1 < e) {
                s = end + (end[1] == '\n' ? 2 : 1);
            } else {
                /* A CR at the end of a chunk ends the line now; whether a LF
                 * follows is only known with the next chunk. */
                p->last_was_cr = 1;
                s = e;
            }
        } else {
            s = end + 1;
        }
    }
    return SSE_OK;
}

sse_status sse_feed(sse_parser *p, const char *bytes, size_t len,
                    sse_sink sink, void *ud) {
    /* Finished first: a feed after finish is a caller error even when the
     * stream had already failed. */
    if (p->finished) return SSE_ERR_FINISHED;
    if (p->status != SSE_OK) return p->status;
    /* One leading BOM is ignored; its bytes may arrive in separate chunks. */
    while (p->bom_pending >= 0 && len > 0) {
        if (*bytes == BOM[p->bom_pending]) {
            bytes++;
            len--;
            if (++p->bom_pending == 3) p->bom_pending = -1;
        } else {
            /* Not a BOM after all: the bytes matched so far are content. */
            int matched = p->bom_pending;
            sse_status st;
            p->bom_pending = -1;
            if (matched) {
                st = feed_lines(p, BOM, (size_t)matched, sink, ud);
                if (st != SSE_OK) return st;
            }
        }
    }
    if (len == 0) return SSE_OK;
    return feed_lines(p, bytes, len, sink, ud);
}

sse_status sse_finish(sse_parser *p, int *pending) {
    int cut = p->line.len > 0 || p->in_event || p->bom_pending > 0;
    if (pending) *pending = cut;
    /* The standard discards an event that was not ended by a blank line. */
    p->line.len = 0;
    p->data.len = 0;
    p->type.len = 0;
    /* Kept, so that a second finish reports the same cut. */
    p->in_event = cut;
    p->finished = 1;
    return p->status;
}

const char *sse_last_event_id(const sse_parser *p, size_t *len) {
    *len = p->last_id.len;
    return p->last_id.len ? p->last_id.ptr : "";
}

int sse_retry(const sse_parser *p, uint64_t *ms) {
    if (p->has_retry) *ms = p->retry_ms;
    return p->has_retry;
}

const char *sse_strerror(sse_status s) {
    switch (s) {
    case SSE_OK: return "ok";
    case SSE_ERR_TOO_LARGE: return "event exceeds the size limit";
    case SSE_ERR_NOMEM: return "out of memory";
    case SSE_ERR_CALLBACK: return "stopped by the event sink";
    case SSE_ERR_FINISHED: return "stream already finished";
    }
    return "unknown error";
}
