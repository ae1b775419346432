#include "fastjson.h"

#include <string.h>

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

static int hex4(const char *p, unsigned *v) {
    int i;
    *v = 0;
    for (i = 0; i < 4; i++) {
        char c = p[i];
        unsigned d;
        if (c >= '0' && c <= '9') d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') d = (unsigned)(c - 'A' + 10);
        else return 0;
        *v = *v * 16 + d;
    }
    return 1;
}

static int put_utf8(bee_buf *out, unsigned cp) {
    char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xC0 | (cp >> 6));
        b[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xE0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        b[0] = (char)(0xF0 | (cp >> 18));
        b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return bee_buf_append(out, b, n);
}

/* Decodes the escaped string body [p, end_quote) into out.  0 on a malformed
 * or unsupported escape: the caller declines and a real decoder decides. */
static int unescape(const char *p, const char *q, bee_buf *out) {
    out->len = 0;
    while (p < q) {
        const char *bs = memchr(p, '\\', (size_t)(q - p));
        if (!bs) return bee_buf_append(out, p, (size_t)(q - p)) == 0;
        if (bee_buf_append(out, p, (size_t)(bs - p))) return 0;
        if (bs + 1 >= q) return 0;
        switch (bs[1]) {
        case '"': case '\\': case '/':
            if (bee_buf_append(out, bs + 1, 1)) return 0;
            p = bs + 2;
            break;
        case 'b': if (bee_buf_append(out, "\b", 1)) return 0; p = bs + 2; break;
        case 'f': if (bee_buf_append(out, "\f", 1)) return 0; p = bs + 2; break;
        case 'n': if (bee_buf_append(out, "\n", 1)) return 0; p = bs + 2; break;
        case 'r': if (bee_buf_append(out, "\r", 1)) return 0; p = bs + 2; break;
        case 't': if (bee_buf_append(out, "\t", 1)) return 0; p = bs + 2; break;
        case 'u': {
            unsigned cp, lo;
            if (q - bs < 6 || !hex4(bs + 2, &cp)) return 0;
            p = bs + 6;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                /* A high surrogate must be followed by an escaped low one;
                 * a lone surrogate is left to the real decoder. */
                if (q - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, &lo) ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return 0;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return 0;
            }
            if (put_utf8(out, cp)) return 0;
            break;
        }
        default:
            return 0;
        }
    }
    return 1;
}

fj_result fastjson_single_string(const char *s, size_t n, const char *key,
                                 size_t key_len, const char **direct,
                                 size_t *direct_len, bee_buf *out) {
    const char *end = s + n, *p = skip_ws(s, end), *v, *q;
    int escaped = 0;
    if (p >= end || *p++ != '{') return FJ_DECLINED;
    p = skip_ws(p, end);
    if ((size_t)(end - p) < key_len + 2 || *p != '"' || memcmp(p + 1, key, key_len) != 0 ||
        p[key_len + 1] != '"')
        return FJ_DECLINED;
    p = skip_ws(p + key_len + 2, end);
    if (p >= end || *p++ != ':') return FJ_DECLINED;
    p = skip_ws(p, end);
    if (p >= end || *p++ != '"') return FJ_DECLINED;
    v = p;
    /* Find the closing quote; control characters are invalid JSON. */
    for (q = p; q < end; q++) {
        unsigned char c = (unsigned char)*q;
        if (c == '"') break;
        if (c < 0x20) return FJ_DECLINED;
        if (c == '\\') {
            escaped = 1;
            if (++q >= end) return FJ_DECLINED;
        }
    }
    if (q >= end) return FJ_DECLINED;
    p = skip_ws(q + 1, end);
    if (p >= end || *p++ != '}') return FJ_DECLINED;
    if (skip_ws(p, end) != end) return FJ_DECLINED;
    if (!escaped) {
        *direct = v;
        *direct_len = (size_t)(q - v);
        return FJ_DIRECT;
    }
    return unescape(v, q, out) ? FJ_DECODED : FJ_DECLINED;
}
