/* calm-mail: the id scan of a Personalize line's "recommendedItems" array, in C.
 *
 * Why by hand: planning a Personalize user meant building 500 Python strings (orjson), hashing
 * each against the catalog and again against the rules' first set filter, to keep ~17 of them
 * (~35 us a line, the plan's largest single cost). No library looks up many short byte strings
 * of one buffer in a fixed table without making a Python object of each. This file does only
 * that: walk a compact JSON array of plain strings, look each one up in a hash table of the
 * catalog's ids, and report the positions in the catalog of the ones the rules keep. It is
 * loaded with ctypes (calm_mail/inputs/idscan.py), which also holds the pure-Python version it
 * must agree with; anything not plain goes back to the full JSON parse.
 *
 * Build: cc -O2 -shared -fPIC -o _idscan-<hash>.so idscan.c (python -m calm_mail.inputs.idscan
 * build does it; `make` runs that).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define IDSCAN_ABI 1

/* What idscan_scan returns besides a count of ids */
#define NOT_PLAIN (-1)  /* not a non-empty compact array of plain strings: parse it in full */
#define UNKNOWN (-2)    /* an id the catalog does not know: the full path counts it */
#define TOO_MANY (-3)   /* more kept ids than the output holds */

typedef struct {
    uint64_t hash;
    uint64_t head;  /* the first 8 bytes, zero-padded: one compare settles an id that short */
    int64_t offset; /* into keys */
    int32_t len;
    int32_t index;  /* the id's position in the caller's list; -1 for an empty slot */
    int32_t keep;
} slot;

typedef struct {
    slot *slots;
    uint64_t mask;
    char *keys;
} idtable;

/* Up to 8 bytes of p, zero-padded, as one word: ids are short, so most fit in one. */
static uint64_t word(const unsigned char *p, int64_t n) {
    uint64_t w = 0;
    memcpy(&w, p, (size_t)(n < 8 ? n : 8));
    return w;
}

/* A multiply-rotate hash over 8-byte words (the table is private to this process; this only
 * has to spread the ids, not resist anyone choosing them: a collision costs a compare). */
static uint64_t hash(const unsigned char *p, int64_t n) {
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)n;
    for (;;) {
        h = (h ^ word(p, n)) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
        if (n <= 8) return h;
        p += 8;
        n -= 8;
    }
}

int64_t idscan_abi(void) { return IDSCAN_ABI; }

/* The table's hash of buf[0:n], for the tests that make two ids collide. */
uint64_t idscan_hash(const char *buf, int64_t n) { return hash((const unsigned char *)buf, n); }

/* A table of n ids: id k is keys[offsets[k]:offsets[k + 1]], kept when keep[k] is nonzero.
 * The keys are copied. NULL when memory runs out. */
idtable *idscan_new(const char *keys, const int64_t *offsets, int64_t n, const uint8_t *keep) {
    uint64_t size = 16;
    while (size < (uint64_t)n * 2) size <<= 1;
    idtable *t = calloc(1, sizeof(idtable));
    if (!t) return NULL;
    t->slots = malloc(size * sizeof(slot));
    t->keys = malloc((size_t)(offsets[n] > 0 ? offsets[n] : 1));
    if (!t->slots || !t->keys) {
        free(t->slots);
        free(t->keys);
        free(t);
        return NULL;
    }
    memcpy(t->keys, keys, (size_t)offsets[n]);
    t->mask = size - 1;
    for (uint64_t i = 0; i < size; i++) t->slots[i].index = -1;
    /* a table at most half full: a miss ends at an empty slot soon */
    for (int64_t k = 0; k < n; k++) {
        int64_t len = offsets[k + 1] - offsets[k];
        const unsigned char *key = (const unsigned char *)keys + offsets[k];
        uint64_t h = hash(key, len);
        uint64_t i = h & t->mask;
        while (t->slots[i].index >= 0) i = (i + 1) & t->mask;
        t->slots[i] = (slot){h, word(key, len), offsets[k], (int32_t)len, (int32_t)k, keep[k] != 0};
    }
    return t;
}

void idscan_free(idtable *t) {
    if (!t) return;
    free(t->slots);
    free(t->keys);
    free(t);
}

static const slot *find(const idtable *t, const unsigned char *p, int64_t n) {
    uint64_t h = hash(p, n);
    uint64_t head = word(p, n);
    for (uint64_t i = h & t->mask;; i = (i + 1) & t->mask) {
        const slot *s = &t->slots[i];
        if (s->index < 0) return NULL;
        if (s->hash == h && s->head == head && s->len == n &&
            (n <= 8 || memcmp(t->keys + s->offset + 8, p + 8, (size_t)(n - 8)) == 0))
            return s;
    }
}

/* Scan buf[start:end], which must be exactly a compact non-empty JSON array of strings with no
 * escape or control character: ["a","b",...]. Returns the number of ids, and writes the
 * positions of the kept ones, in order, to out[1..], their count to out[0] (at most cap).
 * Returns NOT_PLAIN, UNKNOWN or TOO_MANY otherwise (out is then undefined). */
int64_t idscan_scan(const idtable *t, const char *buf, int64_t start, int64_t end, int32_t *out,
                    int64_t cap) {
    const unsigned char *p = (const unsigned char *)buf + start;
    const unsigned char *stop = (const unsigned char *)buf + end;
    if (end - start < 4 || p[0] != '[' || stop[-1] != ']') return NOT_PLAIN;
    p++;
    int64_t total = 0, kept = 0;
    for (;;) {
        if (*p != '"') return NOT_PLAIN;
        const unsigned char *q = ++p;
        while (q < stop && *q != '"') {
            if (*q == '\\' || *q < 0x20) return NOT_PLAIN;
            q++;
        }
        if (q >= stop) return NOT_PLAIN;
        const slot *s = find(t, p, q - p);
        if (!s) return UNKNOWN;
        if (s->keep) {
            if (kept >= cap) return TOO_MANY;
            out[++kept] = s->index;
        }
        total++;
        p = q + 1;
        if (p == stop - 1) break; /* the closing ']' */
        if (*p != ',') return NOT_PLAIN;
        p++;
    }
    out[0] = (int32_t)kept;
    return total;
}
