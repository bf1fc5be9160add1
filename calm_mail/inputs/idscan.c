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

static const uint64_t LOW[9] = {0, 0xff, 0xffff, 0xffffff, 0xffffffff, 0xffffffffffULL,
                                 0xffffffffffffULL, 0xffffffffffffffULL, ~0ULL};

/* Up to 8 bytes of p, zero-padded, as one word: ids are short, so most fit in one. `room` is
 * how many bytes may be read from p: with 8, one load and a mask. */
static inline uint64_t word_in(const unsigned char *p, int64_t n, int64_t room) {
    uint64_t w = 0;
    int64_t k = n < 8 ? n : 8;
    if (room >= 8) {
        memcpy(&w, p, 8);
        return w & LOW[k];
    }
    memcpy(&w, p, (size_t)k);
    return w;
}

static uint64_t word(const unsigned char *p, int64_t n) { return word_in(p, n, n); }

/* A multiply-rotate hash over 8-byte words (the table is private to this process; this only
 * has to spread the ids, not resist anyone choosing them: a collision costs a compare). */
#define SEED 0x9e3779b97f4a7c15ULL
#define MIX 0xff51afd7ed558ccdULL

static inline uint64_t step(uint64_t h, uint64_t w) {
    h = (h ^ w) * MIX;
    return h ^ (h >> 32);
}

/* The hash of p[0:n] whose first word is w0 (`room` bytes readable from p). */
static inline uint64_t hash_from(const unsigned char *p, int64_t n, int64_t room, uint64_t w0) {
    uint64_t h = step(SEED ^ (uint64_t)n, w0);
    for (int64_t k = 8; k < n; k += 8) h = step(h, word_in(p + k, n - k, room - k));
    return h;
}

static uint64_t hash(const unsigned char *p, int64_t n) {
    return hash_from(p, n, n, word(p, n));
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

/* The slot of the id p[0:n] whose first word is head (`room` bytes readable from p), or NULL. */
static inline const slot *find(const idtable *t, const unsigned char *p, int64_t n, int64_t room,
                               uint64_t head) {
    uint64_t h = hash_from(p, n, room, head);
    for (uint64_t i = h & t->mask;; i = (i + 1) & t->mask) {
        const slot *s = &t->slots[i];
        if (s->index < 0) return NULL;
        if (s->hash == h && s->head == head && s->len == n &&
            (n <= 8 || memcmp(t->keys + s->offset + 8, p + 8, (size_t)(n - 8)) == 0))
            return s;
    }
}

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
#define QUOTES 0x2222222222222222ULL

/* Scan buf[start:end], which must be exactly a compact non-empty JSON array of strings:
 * ["a","b",...]. Returns the number of ids, and writes the positions of the kept ones, in
 * order, to out[1..], their count to out[0] (at most cap). Returns NOT_PLAIN, UNKNOWN or
 * TOO_MANY otherwise (out is then undefined).
 *
 * An id runs to the next quote. That is the whole JSON string unless the string holds an
 * escape; then the bytes up to that quote end in a backslash, and no catalog id in the table
 * holds a backslash (nor a quote or a control character: `IdScanner` leaves those out), so the
 * walk stops there with UNKNOWN and the caller reads the line in full. So every id matched is
 * a plain JSON string equal to a catalog id, and every id before it was one too. */
int64_t idscan_scan(const idtable *t, const char *buf, int64_t start, int64_t end, int32_t *out,
                    int64_t cap) {
    const unsigned char *p = (const unsigned char *)buf + start;
    const unsigned char *stop = (const unsigned char *)buf + end;
    if (end - start < 4 || p[0] != '[' || stop[-1] != ']') return NOT_PLAIN;
    p++;
    int64_t total = 0, kept = 0;
    for (;;) {
        if (*p != '"') return NOT_PLAIN;
        p++;
        const unsigned char *q = NULL;
        uint64_t head = 0;
        if (stop - p >= 8) { /* the closing quote among the next 8 bytes, found in one word */
            uint64_t w;
            memcpy(&w, p, 8);
            uint64_t x = w ^ QUOTES; /* a quote byte becomes zero */
            uint64_t zero = (x - ONES) & ~x & HIGHS; /* exact up to the first zero byte */
            if (zero) {
                int64_t n = __builtin_ctzll(zero) >> 3;
                q = p + n;
                head = w & LOW[n];
            }
        }
        if (!q) { /* a long id, or one near the end */
            q = memchr(p, '"', (size_t)(stop - p));
            if (!q) return NOT_PLAIN;
            head = word_in(p, q - p, stop - p);
        }
        const slot *s = find(t, p, q - p, stop - p, head);
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
