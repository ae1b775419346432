/*
 * A fast path for the commonest SSE payload, a JSON object with exactly one
 * string member (`{"text":"..."}`).  Pure C.  Anything it does not fully
 * understand is declined, and the caller falls back to a real JSON decoder,
 * so the fast path can only be faster, never different.
 */
#ifndef BEEOS_FASTJSON_H
#define BEEOS_FASTJSON_H

#include <stddef.h>
#include "buf.h"

typedef enum {
    FJ_DECLINED = 0, /* not that shape (or not valid JSON): use a decoder */
    FJ_DIRECT = 1,   /* no escapes: the value is the view direct, direct_len */
    FJ_DECODED = 2   /* the unescaped value is in out */
} fj_result;

fj_result fastjson_single_string(const char *s, size_t n, const char *key,
                                 size_t key_len, const char **direct,
                                 size_t *direct_len, bee_buf *out);

#endif
