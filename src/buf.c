#include "buf.h"

#include <stdlib.h>
#include <string.h>

int bee_buf_reserve(bee_buf *b, size_t extra) {
    size_t need = b->len + extra;
    size_t cap;
    char *p;
    if (need < b->len) return -1;
    if (need <= b->cap) return 0;
    cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (cap > ((size_t)-1) / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    p = realloc(b->ptr, cap);
    if (!p) return -1;
    b->ptr = p;
    b->cap = cap;
    return 0;
}

int bee_buf_append(bee_buf *b, const char *s, size_t n) {
    if (n == 0) return 0;
    if (bee_buf_reserve(b, n)) return -1;
    memcpy(b->ptr + b->len, s, n);
    b->len += n;
    return 0;
}

int bee_buf_set(bee_buf *b, const char *s, size_t n) {
    b->len = 0;
    return bee_buf_append(b, s, n);
}

void bee_buf_trim(bee_buf *b, size_t keep) {
    if (b->len == 0 && b->cap > keep) {
        free(b->ptr);
        b->ptr = NULL;
        b->cap = 0;
    }
}

void bee_buf_free(bee_buf *b) {
    free(b->ptr);
    b->ptr = NULL;
    b->len = b->cap = 0;
}
