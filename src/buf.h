/* A growable byte buffer: the one allocation helper of the pure C parts. */
#ifndef BEEOS_BUF_H
#define BEEOS_BUF_H

#include <stddef.h>

typedef struct {
    char *ptr;
    size_t len, cap;
} bee_buf;

/* All return 0 on success and -1 on overflow or out of memory (the buffer
 * is then unchanged). */
int bee_buf_reserve(bee_buf *b, size_t extra);
int bee_buf_append(bee_buf *b, const char *s, size_t n);
int bee_buf_set(bee_buf *b, const char *s, size_t n);
/* Gives the memory back when the buffer is empty and larger than keep. */
void bee_buf_trim(bee_buf *b, size_t keep);
void bee_buf_free(bee_buf *b);

#endif
