/*
 * beeos.core: the one file that talks to Lua.  Everything below it (sse.c,
 * evq.c, engine.c) is plain C that never sees a lua_State, so no Lua error
 * can unwind through a libcurl or parser frame: Lua is entered only here,
 * after the C code has returned.
 *
 * Userdata follow liolib: each is created closed (NULL resource) with its
 * metatable set, then the resource is acquired; one idempotent close serves
 * close, __gc and __close; every method checks liveness.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/types.h>

#include "compat.h"
#include "engine.h"
#include "evq.h"
#include "fastjson.h"
#include "sse.h"

/* Retry values up to this are pushed as integers (so 5.4 shows 2500, not
 * 2500.0); anything larger, which no server sends, as a number. */
#define RETRY_INT_MAX 0x7fffffffL

#define SSE_MT "beeos.sse_parser"
#define ENGINE_MT "beeos.engine"
#define TRANSFER_MT "beeos.transfer"
#define BUFFER_MT "beeos.buffer"

/* ------------------------------------------------------------------ */
/* Shared helpers                                                       */

/* Moves queued events (at most max; all when max <= 0) into a new array
 * table on the stack.  An event is popped only after its table is stored,
 * so a memory error raised by Lua midway loses nothing: the rest stays
 * queued for the next call.
 *
 * This is the per-event cost floor of the table API, so it does nothing
 * else: the array is made at its final size, the three keys are pushed once
 * and set with lua_rawset, and a type equal to the previous event's (nearly
 * always) reuses that Lua string instead of interning it again. */
typedef struct {
    const char *type;  /* events of this type ... */
    size_t type_len;
    const char *key;   /* ... get field `text` from this JSON string member */
    size_t key_len;
    bee_buf *scratch;  /* owned by the caller's userdata: no leak on error */
} text_rule;

/* Pushes the value of the object's only member `key` when the data has
 * that exact shape (see fastjson.h), else nothing.  Returns 1 if pushed. */
static int push_string_member(lua_State *L, const char *s, size_t n, const char *key,
                              size_t key_len, bee_buf *scratch) {
    const char *direct = NULL;
    size_t direct_len = 0;
    switch (fastjson_single_string(s, n, key, key_len, &direct, &direct_len, scratch)) {
    case FJ_DIRECT:
        lua_pushlstring(L, direct, direct_len);
        return 1;
    case FJ_DECODED:
        lua_pushlstring(L, scratch->ptr, scratch->len);
        return 1;
    default:
        return 0;
    }
}

static void push_events(lua_State *L, evq *q, int max, const text_rule *rule) {
    sse_event ev;
    int n = 0, base;
    size_t want = max > 0 && (size_t)max < q->count ? (size_t)max : q->count;
    const char *last_type = NULL;
    size_t last_type_len = 0;
    luaL_checkstack(L, 8, "push_events");
    base = lua_gettop(L);
    lua_pushliteral(L, "type"); /* base + 1 */
    lua_pushliteral(L, "data"); /* base + 2 */
    lua_pushliteral(L, "id");   /* base + 3 */
    lua_pushnil(L);             /* base + 4: the last type string pushed */
    lua_createtable(L, want < 100000 ? (int)want : 100000, 0);
    while ((max <= 0 || n < max) && evq_peek(q, &ev)) {
        if (ev.kind == SSE_KIND_COMMENT) {
            lua_createtable(L, 0, 1);
            lua_pushlstring(L, ev.data, ev.data_len);
            lua_setfield(L, -2, "comment");
        } else {
            lua_createtable(L, 0, 3);
            lua_pushvalue(L, base + 1);
            if (!last_type || ev.type_len != last_type_len ||
                memcmp(ev.type, last_type, last_type_len) != 0) {
                lua_pushlstring(L, ev.type, ev.type_len);
                lua_replace(L, base + 4);
                last_type = lua_tolstring(L, base + 4, &last_type_len);
            }
            lua_pushvalue(L, base + 4);
            lua_rawset(L, -3);
            lua_pushvalue(L, base + 2);
            lua_pushlstring(L, ev.data, ev.data_len);
            lua_rawset(L, -3);
            lua_pushvalue(L, base + 3);
            lua_pushlstring(L, ev.id, ev.id_len);
            lua_rawset(L, -3);
            if (rule && ev.type_len == rule->type_len &&
                memcmp(ev.type, rule->type, rule->type_len) == 0 &&
                push_string_member(L, ev.data, ev.data_len, rule->key, rule->key_len,
                                   rule->scratch))
                lua_setfield(L, -2, "text");
        }
        lua_rawseti(L, -2, ++n);
        evq_pop(q);
    }
    lua_replace(L, base + 1);
    lua_settop(L, base + 1);
}

static size_t opt_size_field(lua_State *L, int t, const char *name, size_t def) {
    lua_Number v;
    size_t r = def;
    lua_getfield(L, t, name);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "%s must be a positive integer", name);
        v = lua_tonumber(L, -1);
        if (!(v >= 1 && v <= 9007199254740992.0) || v != (lua_Number)(size_t)v)
            luaL_error(L, "%s must be a positive integer", name);
        r = (size_t)v;
    }
    lua_pop(L, 1);
    return r;
}

static int opt_bool_field(lua_State *L, int t, const char *name, int def) {
    int r = def;
    lua_getfield(L, t, name);
    if (!lua_isnil(L, -1)) {
        if (!lua_isboolean(L, -1)) luaL_error(L, "%s must be a boolean", name);
        r = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    return r;
}

/* ------------------------------------------------------------------ */
/* SSE parser                                                           */

typedef struct {
    int live;
    sse_parser parser;
    evq queue;
} lsse;

static lsse *check_sse(lua_State *L) {
    lsse *s = (lsse *)luaL_checkudata(L, 1, SSE_MT);
    if (!s->live) luaL_error(L, "attempt to use a closed SSE parser");
    return s;
}

static int sse_close(lua_State *L) {
    lsse *s = (lsse *)luaL_checkudata(L, 1, SSE_MT);
    if (s->live) {
        s->live = 0;
        sse_free(&s->parser);
        evq_free(&s->queue);
    }
    return 0;
}

/* core.sse_new{ max_event = n, comments = bool } */
static int sse_new(lua_State *L) {
    size_t max_event = SSE_DEFAULT_MAX_EVENT;
    int comments = 0;
    lsse *s;
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        max_event = opt_size_field(L, 1, "max_event", max_event);
        comments = opt_bool_field(L, 1, "comments", 0);
    }
    s = (lsse *)lua_newuserdata(L, sizeof *s);
    s->live = 0;
    luaL_getmetatable(L, SSE_MT);
    lua_setmetatable(L, -2);
    sse_init(&s->parser, max_event, comments);
    evq_init(&s->queue);
    s->live = 1;
    return 1;
}

static int push_sse_error(lua_State *L, lsse *s, sse_status st) {
    lua_pushnil(L);
    if (st == SSE_ERR_TOO_LARGE) {
        char msg[96];
        snprintf(msg, sizeof msg, "%s (%zu bytes)", sse_strerror(st), s->parser.max_event);
        lua_pushstring(L, msg);
    }
    else if (st == SSE_ERR_CALLBACK)
        lua_pushstring(L, sse_strerror(SSE_ERR_NOMEM)); /* the queue's only failure */
    else
        lua_pushstring(L, sse_strerror(st));
    push_events(L, &s->queue, 0, NULL);
    return 3;
}

/* p:feed(bytes) -> events | nil, err, events_before_the_error */
static int sse_feed_l(lua_State *L) {
    lsse *s = check_sse(L);
    size_t len;
    const char *bytes = luaL_checklstring(L, 2, &len);
    sse_status st = sse_feed(&s->parser, bytes, len, evq_sink, &s->queue);
    if (st == SSE_ERR_FINISHED) return luaL_error(L, "feed after finish");
    if (st != SSE_OK) return push_sse_error(L, s, st);
    push_events(L, &s->queue, 0, NULL);
    return 1;
}

/* p:finish() -> clean (false when an unterminated event was discarded) */
static int sse_finish_l(lua_State *L) {
    lsse *s = check_sse(L);
    int pending = 0;
    sse_status st = sse_finish(&s->parser, &pending);
    if (st != SSE_OK && st != SSE_ERR_FINISHED) return push_sse_error(L, s, st);
    lua_pushboolean(L, !pending);
    return 1;
}

static int sse_last_event_id_l(lua_State *L) {
    lsse *s = check_sse(L);
    size_t len;
    const char *id = sse_last_event_id(&s->parser, &len);
    lua_pushlstring(L, id, len);
    return 1;
}

static int sse_retry_l(lua_State *L) {
    lsse *s = check_sse(L);
    uint64_t ms;
    if (!sse_retry(&s->parser, &ms)) lua_pushnil(L);
    else if (ms <= (uint64_t)RETRY_INT_MAX) lua_pushinteger(L, (lua_Integer)ms);
    else lua_pushnumber(L, (lua_Number)ms);
    return 1;
}

static int sse_tostring(lua_State *L) {
    lsse *s = (lsse *)luaL_checkudata(L, 1, SSE_MT);
    if (s->live) lua_pushfstring(L, "beeos.sse parser (%p)", (void *)s);
    else lua_pushstring(L, "beeos.sse parser (closed)");
    return 1;
}

static const luaL_Reg sse_methods[] = {
    {"feed", sse_feed_l},
    {"finish", sse_finish_l},
    {"last_event_id", sse_last_event_id_l},
    {"retry", sse_retry_l},
    {"close", sse_close},
    {NULL, NULL}};

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods,
                      lua_CFunction close, lua_CFunction tostring) {
    luaL_newmetatable(L, name);
    lua_createtable(L, 0, 8);
    bee_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}


/* ------------------------------------------------------------------ */
/* Engine                                                               */

typedef struct {
    bee_engine *e;
} lengine;

typedef struct {
    bee_transfer *t; /* NULL once closed, or when its engine was closed */
    bee_buf scratch; /* unescaped JSON strings of events() */
} ltransfer;

static lengine *check_engine(lua_State *L, int idx) {
    lengine *le = (lengine *)luaL_checkudata(L, idx, ENGINE_MT);
    if (!le->e) luaL_error(L, "attempt to use a closed engine");
    return le;
}

static int engine_close_l(lua_State *L) {
    lengine *le = (lengine *)luaL_checkudata(L, 1, ENGINE_MT);
    if (le->e) {
        bee_engine *e = le->e;
        le->e = NULL;
        engine_free(e);
    }
    return 0;
}

static int engine_new_l(lua_State *L) {
    const char *err = NULL;
    lengine *le = (lengine *)lua_newuserdata(L, sizeof *le);
    le->e = NULL;
    luaL_getmetatable(L, ENGINE_MT);
    lua_setmetatable(L, -2);
    le->e = engine_new(&err);
    if (!le->e) return luaL_error(L, "cannot create the transfer engine: %s", err);
    return 1;
}

static const char *opt_string_field(lua_State *L, int t, const char *name) {
    const char *v = NULL;
    lua_getfield(L, t, name);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "%s must be a string", name);
        v = lua_tostring(L, -1);
    }
    lua_pop(L, 1); /* the request table keeps the string alive */
    return v;
}

static lua_Number opt_number_field(lua_State *L, int t, const char *name, lua_Number def) {
    lua_Number v = def;
    lua_getfield(L, t, name);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER || !(lua_tonumber(L, -1) >= 0))
            luaL_error(L, "%s must be a non-negative number", name);
        v = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

/* engine:start{ url=, method=, headers={...}, body=, stream=, comments=,
 *   connect_timeout_ms=, deadline_ms= (absolute, core.now_ms clock),
 *   idle_timeout_ms=, max_body=, max_event=, queue_high=, insecure=, ca_file= }
 * -> transfer | nil, message */
static int engine_start_l(lua_State *L) {
    lengine *le = check_engine(L, 1);
    bee_request rq;
    const char **headers;
    const char *err = NULL;
    size_t i, nheaders;
    ltransfer *lt;
    memset(&rq, 0, sizeof rq);
    luaL_checktype(L, 2, LUA_TTABLE);
    rq.url = opt_string_field(L, 2, "url");
    if (!rq.url) return luaL_error(L, "url is required");
    rq.method = opt_string_field(L, 2, "method");
    lua_getfield(L, 2, "body");
    if (!lua_isnil(L, -1)) rq.body = luaL_checklstring(L, -1, &rq.body_len);
    lua_pop(L, 1);
    rq.stream = opt_bool_field(L, 2, "stream", 0);
    rq.report_comments = opt_bool_field(L, 2, "comments", 0);
    rq.insecure = opt_bool_field(L, 2, "insecure", 0);
    rq.ca_file = opt_string_field(L, 2, "ca_file");
    rq.connect_timeout_ms = (long)opt_number_field(L, 2, "connect_timeout_ms", 0);
    rq.deadline_ms = (int64_t)opt_number_field(L, 2, "deadline_ms", 0);
    rq.idle_timeout_ms = (long)opt_number_field(L, 2, "idle_timeout_ms", 0);
    rq.max_body = opt_size_field(L, 2, "max_body", 0);
    rq.max_event = opt_size_field(L, 2, "max_event", 0);
    rq.queue_high = opt_size_field(L, 2, "queue_high", 0);

    lua_getfield(L, 2, "headers");
    nheaders = lua_istable(L, -1) ? bee_rawlen(L, -1) : 0;
    /* Scratch space owned by Lua: nothing to free if an error unwinds. */
    headers = (const char **)lua_newuserdata(L, (nheaders ? nheaders : 1) * sizeof *headers);
    for (i = 0; i < nheaders; i++) {
        lua_rawgeti(L, -2, (int)i + 1);
        if (lua_type(L, -1) != LUA_TSTRING) return luaL_error(L, "headers[%d] must be a string", (int)i + 1);
        headers[i] = lua_tostring(L, -1);
        lua_pop(L, 1); /* still referenced by the headers table */
    }
    rq.headers = headers;
    rq.nheaders = nheaders;

    lt = (ltransfer *)lua_newuserdata(L, sizeof *lt);
    memset(lt, 0, sizeof *lt);
    luaL_getmetatable(L, TRANSFER_MT);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, 1); /* the transfer keeps its engine alive */
    bee_setuservalue(L, -2);
    lt->t = engine_start(le->e, &rq, &err);
    if (!lt->t) {
        lua_pushnil(L);
        lua_pushstring(L, err ? err : "cannot start the transfer");
        return 2;
    }
    bee_transfer_set_owner(lt->t, &lt->t);
    return 1;
}

static int engine_step_l(lua_State *L) {
    lengine *le = check_engine(L, 1);
    lua_Number ms = luaL_optnumber(L, 2, 0);
    if (ms < 0) ms = 0;
    if (ms > 3600000) ms = 3600000;
    lua_pushinteger(L, engine_step(le->e, (long)ms));
    return 1;
}

static int engine_take_ready_l(lua_State *L) {
    lengine *le = check_engine(L, 1);
    uint64_t ids[64];
    size_t n, i;
    int k = 0;
    lua_newtable(L);
    while ((n = engine_take_ready(le->e, ids, 64)) > 0) {
        for (i = 0; i < n; i++) {
            lua_pushnumber(L, (lua_Number)ids[i]);
            lua_rawseti(L, -2, ++k);
        }
    }
    return 1;
}

/* engine:sockets() -> { [fd] = "r" | "w" | "rw" }: what an outside event
 * loop must watch before calling engine:step(0). */
static int engine_sockets_l(lua_State *L) {
    lengine *le = check_engine(L, 1);
    size_t n = engine_nsockets(le->e), i;
    struct pollfd *fds = (struct pollfd *)lua_newuserdata(L, (n ? n : 1) * sizeof *fds);
    n = engine_pollfds(le->e, fds, n);
    lua_createtable(L, 0, (int)n);
    for (i = 0; i < n; i++) {
        int r = fds[i].events & POLLIN, w = fds[i].events & POLLOUT;
        lua_pushstring(L, r && w ? "rw" : (r ? "r" : "w"));
        lua_rawseti(L, -2, fds[i].fd);
    }
    return 1;
}

/* engine:timeout() -> ms until engine:step(0) is due anyway, or nil */
static int engine_timeout_l(lua_State *L) {
    lengine *le = check_engine(L, 1);
    long ms = engine_timeout_ms(le->e);
    if (ms < 0) lua_pushnil(L);
    else lua_pushinteger(L, ms);
    return 1;
}

static int engine_active_l(lua_State *L) {
    lengine *le = check_engine(L, 1);
    lua_pushinteger(L, engine_active(le->e));
    return 1;
}

static int engine_tostring(lua_State *L) {
    lengine *le = (lengine *)luaL_checkudata(L, 1, ENGINE_MT);
    if (le->e) lua_pushfstring(L, "beeos.engine (%p)", (void *)le->e);
    else lua_pushstring(L, "beeos.engine (closed)");
    return 1;
}

/* core.wait({engine, ...}, timeout_ms): waits for socket activity of
 * several engines at once, then does each one's work step.  Sleeps when
 * nothing is due.  One engine: its own step (epoll on Linux).  Several: one
 * poll() over each engine's epoll descriptor (engine_fd), or over all its
 * sockets where it has none, then engine_step(e, 0) or engine_handle. */
typedef struct {
    size_t count; /* pollfd entries of this engine */
    int epoll;    /* 1: one entry, its engine_fd */
} wait_slot;

static int wait_l(lua_State *L) {
    int n, i;
    size_t total = 0, off = 0;
    long timeout;
    lua_Number ms;
    struct pollfd *fds;
    wait_slot *slots;
    luaL_checktype(L, 1, LUA_TTABLE);
    ms = luaL_optnumber(L, 2, 0);
    timeout = ms < 0 ? 0 : (ms > 3600000 ? 3600000 : (long)ms);
    n = (int)bee_rawlen(L, 1);
    for (i = 1; i <= n; i++) {
        lengine *le;
        long due;
        lua_rawgeti(L, 1, i);
        le = check_engine(L, -1);
        lua_pop(L, 1);
        total += engine_fd(le->e) >= 0 ? 1 : engine_nsockets(le->e);
        due = engine_timeout_ms(le->e);
        if (due >= 0 && due < timeout) timeout = due;
    }
    if (n == 1) {
        lua_rawgeti(L, 1, 1);
        engine_step(((lengine *)lua_touserdata(L, -1))->e, timeout);
        lua_pop(L, 1);
        return 0;
    }
    fds = (struct pollfd *)lua_newuserdata(L, (total ? total : 1) * sizeof *fds);
    slots = (wait_slot *)lua_newuserdata(L, (size_t)(n ? n : 1) * sizeof *slots);
    for (i = 1; i <= n; i++) {
        lengine *le;
        int efd;
        lua_rawgeti(L, 1, i);
        le = (lengine *)lua_touserdata(L, -1);
        lua_pop(L, 1);
        efd = engine_fd(le->e);
        slots[i - 1].epoll = efd >= 0;
        if (efd >= 0) {
            fds[off].fd = efd;
            fds[off].events = POLLIN;
            fds[off].revents = 0;
            slots[i - 1].count = 1;
        } else {
            slots[i - 1].count = engine_pollfds(le->e, fds + off, total - off);
        }
        off += slots[i - 1].count;
    }
    if (poll(fds, (nfds_t)off, (int)timeout) < 0)
        for (i = 0; i < (int)off; i++) fds[i].revents = 0;
    off = 0;
    for (i = 1; i <= n; i++) {
        lengine *le;
        lua_rawgeti(L, 1, i);
        le = (lengine *)lua_touserdata(L, -1);
        lua_pop(L, 1);
        if (slots[i - 1].epoll) engine_step(le->e, 0);
        else engine_handle(le->e, fds + off, slots[i - 1].count);
        off += slots[i - 1].count;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Transfer                                                             */

static bee_transfer *check_transfer(lua_State *L) {
    ltransfer *lt = (ltransfer *)luaL_checkudata(L, 1, TRANSFER_MT);
    if (!lt->t) luaL_error(L, "attempt to use a closed transfer");
    return lt->t;
}

static int transfer_close_l(lua_State *L) {
    ltransfer *lt = (ltransfer *)luaL_checkudata(L, 1, TRANSFER_MT);
    if (lt->t) {
        bee_transfer *t = lt->t;
        lt->t = NULL;
        bee_transfer_free(t);
    }
    bee_buf_free(&lt->scratch);
    return 0;
}

static int transfer_state_l(lua_State *L) {
    static const char *const names[] = {"connecting", "headers", "done", "failed"};
    lua_pushstring(L, names[bee_transfer_state(check_transfer(L))]);
    return 1;
}

static int transfer_status_l(lua_State *L) {
    lua_pushinteger(L, bee_transfer_status(check_transfer(L)));
    return 1;
}

static int transfer_head_done_l(lua_State *L) {
    lua_pushboolean(L, bee_transfer_head_done(check_transfer(L)));
    return 1;
}

/* t:header(name) -> value | nil: one response header without parsing
 * them all. */
static int transfer_header_l(lua_State *L) {
    size_t len;
    const char *v = bee_transfer_header(check_transfer(L), luaL_checkstring(L, 2), &len);
    if (v) lua_pushlstring(L, v, len);
    else lua_pushnil(L);
    return 1;
}

static int transfer_headers_l(lua_State *L) {
    size_t len;
    const char *h = bee_transfer_headers(check_transfer(L), &len);
    lua_pushlstring(L, h, len);
    return 1;
}

static int transfer_body_l(lua_State *L) {
    size_t len;
    const char *b = bee_transfer_body(check_transfer(L), &len);
    lua_pushlstring(L, b, len);
    return 1;
}

static int transfer_is_sse_l(lua_State *L) {
    lua_pushboolean(L, bee_transfer_is_sse(check_transfer(L)));
    return 1;
}

/* t:events([max [, text_type, text_key]]) -> array of {type, data, id}
 * (or {comment}).  With text_type and text_key, events of that type whose
 * data is exactly {"<text_key>": "<string>"} also get field `text`: the
 * caller's protocol names the type and key, C only saves the decode. */
static int transfer_events_l(lua_State *L) {
    ltransfer *lt = (ltransfer *)luaL_checkudata(L, 1, TRANSFER_MT);
    bee_transfer *t = check_transfer(L);
    int max = (int)luaL_optinteger(L, 2, 0);
    text_rule rule;
    int with_rule = !lua_isnoneornil(L, 3);
    if (with_rule) {
        rule.type = luaL_checklstring(L, 3, &rule.type_len);
        rule.key = luaL_checklstring(L, 4, &rule.key_len);
        rule.scratch = &lt->scratch;
    }
    push_events(L, bee_transfer_events(t), max, with_rule ? &rule : NULL);
    bee_transfer_events_taken(t);
    return 1;
}

static int transfer_error_l(lua_State *L) {
    const char *msg = NULL;
    const char *code = bee_transfer_error(check_transfer(L), &msg);
    if (!code) return 0;
    lua_pushstring(L, code);
    lua_pushstring(L, msg ? msg : "");
    return 2;
}

static int transfer_id_l(lua_State *L) {
    lua_pushnumber(L, (lua_Number)bee_transfer_id(check_transfer(L)));
    return 1;
}

static int transfer_cut_l(lua_State *L) {
    lua_pushboolean(L, bee_transfer_sse_cut(check_transfer(L)));
    return 1;
}

static int transfer_tostring(lua_State *L) {
    ltransfer *lt = (ltransfer *)luaL_checkudata(L, 1, TRANSFER_MT);
    if (lt->t) lua_pushfstring(L, "beeos.transfer %d", (int)bee_transfer_id(lt->t));
    else lua_pushstring(L, "beeos.transfer (closed)");
    return 1;
}

static const luaL_Reg engine_methods[] = {
    {"start", engine_start_l},
    {"step", engine_step_l},
    {"take_ready", engine_take_ready_l},
    {"sockets", engine_sockets_l},
    {"timeout", engine_timeout_l},
    {"active", engine_active_l},
    {"close", engine_close_l},
    {NULL, NULL}};

static const luaL_Reg transfer_methods[] = {
    {"state", transfer_state_l},
    {"status", transfer_status_l},
    {"headers", transfer_headers_l},
    {"header", transfer_header_l},
    {"head_done", transfer_head_done_l},
    {"body", transfer_body_l},
    {"is_sse", transfer_is_sse_l},
    {"events", transfer_events_l},
    {"error", transfer_error_l},
    {"id", transfer_id_l},
    {"cut", transfer_cut_l},
    {"close", transfer_close_l},
    {NULL, NULL}};

/* ------------------------------------------------------------------ */
/* Byte buffer: text kept outside the Lua heap                          */

/* A stream's accumulated text lives here rather than in Lua strings: a
 * large live Lua heap makes the collector run rarely, and the short
 * strings of every event then pile up in the string table. */
typedef struct {
    int live;
    bee_buf buf;
} lbuffer;

static lbuffer *new_buffer(lua_State *L) {
    lbuffer *b = (lbuffer *)lua_newuserdata(L, sizeof *b);
    memset(b, 0, sizeof *b);
    luaL_getmetatable(L, BUFFER_MT);
    lua_setmetatable(L, -2);
    b->live = 1;
    return b;
}

static lbuffer *check_buffer(lua_State *L) {
    lbuffer *b = (lbuffer *)luaL_checkudata(L, 1, BUFFER_MT);
    if (!b->live) luaL_error(L, "attempt to use a closed buffer");
    return b;
}

static int buffer_new_l(lua_State *L) {
    new_buffer(L);
    return 1;
}

static int buffer_append_l(lua_State *L) {
    lbuffer *b = check_buffer(L);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    if (bee_buf_append(&b->buf, s, len)) return luaL_error(L, "out of memory");
    return 0;
}

static int buffer_tostring_l(lua_State *L) {
    lbuffer *b = check_buffer(L);
    lua_pushlstring(L, b->buf.len ? b->buf.ptr : "", b->buf.len);
    return 1;
}

static int buffer_len_l(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)check_buffer(L)->buf.len);
    return 1;
}

static int buffer_close_l(lua_State *L) {
    lbuffer *b = (lbuffer *)luaL_checkudata(L, 1, BUFFER_MT);
    if (b->live) {
        b->live = 0;
        bee_buf_free(&b->buf);
    }
    return 0;
}

static int buffer_name_l(lua_State *L) {
    lbuffer *b = (lbuffer *)luaL_checkudata(L, 1, BUFFER_MT);
    lua_pushfstring(L, "beeos.buffer (%s)", b->live ? "open" : "closed");
    return 1;
}

static const luaL_Reg buffer_methods[] = {
    {"append", buffer_append_l},
    {"tostring", buffer_tostring_l},
    {"len", buffer_len_l},
    {"close", buffer_close_l},
    {NULL, NULL}};

/* ------------------------------------------------------------------ */
/* Small utilities                                                      */

static int now_ms_l(lua_State *L) {
    lua_pushnumber(L, (lua_Number)bee_now_ms());
    return 1;
}

static int sleep_ms_l(lua_State *L) {
    lua_Number ms = luaL_checknumber(L, 1);
    if (ms > 0) poll(NULL, 0, ms > 3600000 ? 3600000 : (int)ms);
    return 0;
}

/* core.json_string_member(json, key) -> value | nil: the value of an
 * object's only member when it is that key and a string; nil means "decode
 * it properly". */
static int json_string_member_l(lua_State *L) {
    size_t n, key_len;
    const char *str = luaL_checklstring(L, 1, &n);
    const char *key = luaL_checklstring(L, 2, &key_len);
    lbuffer *b = new_buffer(L); /* scratch owned by Lua: no leak on error */
    if (!push_string_member(L, str, n, key, key_len, &b->buf)) lua_pushnil(L);
    return 1;
}

/* core.uuid4() -> a random (version 4) UUID string.  Kernel randomness,
 * not math.random: forked workers (nginx) must not share a sequence. */
static int uuid4_l(lua_State *L) {
    unsigned char b[16];
    char out[37];
    static const char hex[] = "0123456789abcdef";
    size_t got = 0;
    int i, o = 0;
    while (got < sizeof b) {
        ssize_t n = getrandom(b + got, sizeof b - got, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return luaL_error(L, "getrandom failed: %s", strerror(errno));
        }
        got += (size_t)n;
    }
    b[6] = (unsigned char)((b[6] & 0x0F) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3F) | 0x80);
    for (i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    lua_pushlstring(L, out, 36);
    return 1;
}

static int curl_version_l(lua_State *L) {
    lua_pushfstring(L, "libcurl/%s", bee_curl_version());
    return 1;
}

static const luaL_Reg core_functions[] = {
    {"sse_new", sse_new},
    {"engine_new", engine_new_l},
    {"wait", wait_l},
    {"now_ms", now_ms_l},
    {"sleep_ms", sleep_ms_l},
    {"json_string_member", json_string_member_l},
    {"buffer", buffer_new_l},
    {"curl_version", curl_version_l},
    {"uuid4", uuid4_l},
    {NULL, NULL}};

/* The only exported symbol (the build hides the rest). */
__attribute__((visibility("default"))) int luaopen_beeos_core(lua_State *L);

int luaopen_beeos_core(lua_State *L) {
    new_class(L, SSE_MT, sse_methods, sse_close, sse_tostring);
    new_class(L, ENGINE_MT, engine_methods, engine_close_l, engine_tostring);
    new_class(L, TRANSFER_MT, transfer_methods, transfer_close_l, transfer_tostring);
    new_class(L, BUFFER_MT, buffer_methods, buffer_close_l, buffer_name_l);
    lua_createtable(L, 0, 8);
    bee_setfuncs(L, core_functions, 0);
    return 1;
}
