/*
 * Writes the SSE benchmark inputs, deterministically (fixed seed):
 *
 *   gen_sse small OUT   ~64 MiB of agent-like events:
 *                         event: delta
 *                         id: <n>
 *                         data: {"text":"..."}      (60-120 bytes of data)
 *                         <blank line>
 *   gen_sse large OUT   the same shape with 64 KiB of data per event
 *
 * The text is ASCII words with, now and then, a JSON escape (\n, \") or a
 * UTF-8 word (accents, a dash, CJK, an emoji), as model output has.  Lines
 * end in LF.  The file stops at the last whole event that fits in 64 MiB.
 *
 * OUT.meta gets "events=N data_bytes=M bytes=B": what every parser must
 * find, so the driver can check that all of them parsed the same stream.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOTAL_CAP (64u * 1024u * 1024u)

static uint64_t rng_state = 0x5EE5EEDC0FFEE123ull;

/* splitmix64: tiny, fixed, the same everywhere. */
static uint64_t rng(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static unsigned below(unsigned n) { return (unsigned)(rng() % n); }

static const char *const ascii_words[] = {
    "the", "a", "function", "returns", "value", "of", "to", "and", "in", "file",
    "we", "can", "call", "this", "with", "error", "parser", "stream", "event",
    "token", "model", "agent", "tool", "result", "let", "me", "check", "first",
    "then", "update", "test", "passes", "now", "I", "will", "read", "config",
    "line", "buffer", "chunk", "is", "not", "it", "for", "json", "data", "type",
    "`sse.c`", "(see", "below)", "42", "0.5", "OK,", "so", "if", "else", "true",
};
static const char *const utf8_words[] = {
    "caf\xC3\xA9", "na\xC3\xAFve", "\xE2\x80\x94", "\xE2\x86\x92",
    "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E", "\xF0\x9F\x99\x82", "\xC3\xBC" "ber",
};
static const char *const escapes[] = {"\\n", "\\n\\n", "\\\"", "\\t"};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Appends JSON string content of exactly n bytes to out (never splits a
 * UTF-8 sequence or an escape: the last bytes are ASCII filler). */
static size_t text(char *out, size_t n) {
    size_t len = 0;
    for (;;) {
        const char *w;
        unsigned r = below(100);
        size_t wl;
        if (r < 4) w = utf8_words[below(NELEM(utf8_words))];
        else if (r < 7) w = escapes[below(NELEM(escapes))];
        else w = ascii_words[below(NELEM(ascii_words))];
        wl = strlen(w);
        if (len + wl + 1 > n) break;
        if (len) out[len++] = ' ';
        memcpy(out + len, w, wl);
        len += wl;
    }
    while (len < n) out[len++] = (char)('a' + below(26));
    return len;
}

int main(int argc, char **argv) {
    int large;
    FILE *f, *m;
    char *ev;
    size_t total = 0, data_bytes = 0;
    unsigned long events = 0;
    char meta[4096];

    if (argc != 3 || (strcmp(argv[1], "small") && strcmp(argv[1], "large"))) {
        fprintf(stderr, "usage: gen_sse small|large OUT\n");
        return 2;
    }
    large = strcmp(argv[1], "large") == 0;
    if (large) rng_state ^= 0x1A26Eull;
    ev = malloc(128 * 1024);
    f = fopen(argv[2], "wb");
    if (!ev || !f) {
        perror(argv[2]);
        return 1;
    }
    for (;;) {
        /* data = {"text":"<t>"}: 11 bytes of framing around t. */
        size_t data_len = large ? 64u * 1024u : 60u + below(61);
        size_t n = 0;
        n += (size_t)sprintf(ev + n, "event: delta\nid: %lu\ndata: {\"text\":\"", events + 1);
        n += text(ev + n, data_len - 11);
        memcpy(ev + n, "\"}\n\n", 4);
        n += 4;
        if (total + n > TOTAL_CAP) break;
        if (fwrite(ev, 1, n, f) != n) {
            perror(argv[2]);
            return 1;
        }
        total += n;
        data_bytes += data_len;
        events++;
    }
    if (fclose(f)) {
        perror(argv[2]);
        return 1;
    }
    snprintf(meta, sizeof meta, "%s.meta", argv[2]);
    m = fopen(meta, "w");
    if (!m) {
        perror(meta);
        return 1;
    }
    fprintf(m, "events=%lu data_bytes=%zu bytes=%zu\n", events, data_bytes, total);
    fclose(m);
    free(ev);
    return 0;
}
