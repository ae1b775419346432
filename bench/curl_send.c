/*
 * Agent API benchmark 2, the limit: the same sequential POST requests as
 * bench/api_send.lua's agent:send calls, made with plain libcurl's easy
 * interface reusing one handle (so one keep-alive connection).
 *
 *   curl_send URL TOKEN CALLS [RUNS]
 *
 * URL is the server's base URL; the request goes to
 * URL/api/v1/agents/echo/messages with the headers the SDK sends
 * (Authorization, Content-Type, Accept, User-Agent, Idempotency-Key, no
 * Expect) and a body {"message":"hello","idempotency_key":K} with a new
 * 36-character key per call.  The reply body is collected in memory and
 * checked for the echo.  200 warm-up calls come first.  Prints one line per
 * run and a last line "best_calls_per_s N".
 */
#define _GNU_SOURCE /* memmem */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    char *p;
    size_t len, cap;
} sink;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud) {
    sink *s = ud;
    size_t n = size * nmemb;
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        while (cap < s->len + n) cap *= 2;
        char *p = realloc(s->p, cap);
        if (!p) return 0;
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p + s->len, ptr, n);
    s->len += n;
    return n;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static unsigned long long seq;

static int one_call(CURL *h, const char *auth, sink *s) {
    char key[40], body[128], keyhdr[64];
    struct curl_slist *hdrs = NULL;
    long status = 0;
    CURLcode rc;
    snprintf(key, sizeof key, "00000000-0000-4000-8000-%012llx", ++seq);
    snprintf(body, sizeof body, "{\"message\":\"hello\",\"idempotency_key\":\"%s\"}", key);
    snprintf(keyhdr, sizeof keyhdr, "Idempotency-Key: %s", key);
    hdrs = curl_slist_append(hdrs, auth);
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "Accept: application/json");
    hdrs = curl_slist_append(hdrs, "User-Agent: lua-beeos/0.1.0 (Lua 5.4; libcurl)");
    hdrs = curl_slist_append(hdrs, keyhdr);
    hdrs = curl_slist_append(hdrs, "Expect:");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(h, CURLOPT_COPYPOSTFIELDS, body);
    s->len = 0;
    rc = curl_easy_perform(h);
    curl_slist_free_all(hdrs);
    if (rc != CURLE_OK) {
        fprintf(stderr, "curl_easy_perform: %s\n", curl_easy_strerror(rc));
        return -1;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200 || s->len == 0 || !memmem(s->p, s->len, "echo: hello", 11)) {
        fprintf(stderr, "unexpected reply: HTTP %ld\n", status);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    char url[1024], auth[512];
    long calls, runs, i, r;
    double best = 0;
    sink s = {0};
    CURL *h;
    if (argc < 4) {
        fprintf(stderr, "usage: %s URL TOKEN CALLS [RUNS]\n", argv[0]);
        return 2;
    }
    snprintf(url, sizeof url, "%s/api/v1/agents/echo/messages", argv[1]);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", argv[2]);
    calls = atol(argv[3]);
    runs = argc > 4 ? atol(argv[4]) : 1;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
    for (i = 0; i < 200; i++)
        if (one_call(h, auth, &s)) return 1;
    for (r = 1; r <= runs; r++) {
        double t0 = now_s(), dt, rate;
        for (i = 0; i < calls; i++)
            if (one_call(h, auth, &s)) return 1;
        dt = now_s() - t0;
        rate = calls / dt;
        if (rate > best) best = rate;
        printf("run %ld: %ld calls in %.3f s: %.0f calls/s (%.1f us/call)\n", r, calls, dt, rate,
               dt / calls * 1e6);
    }
    printf("best_calls_per_s %.0f\n", best);
    curl_easy_cleanup(h);
    curl_global_cleanup();
    free(s.p);
    return 0;
}
