/* calm-mail: the id scan of a Personalize line's "recommendedItems" array, and the line's
 * shape check, in C: the extension module `_idscan`.
 *
 * Why by hand: planning a Personalize user meant building 500 Python strings (orjson), hashing
 * each against the catalog and again against the rules' first set filter, to keep ~17 of them
 * (~35 us a line, the plan's largest single cost). No library looks up many short byte strings
 * of one buffer in a fixed table without making a Python object of each. This file walks a
 * compact JSON array of plain strings, looks each one up in a hash table of the catalog's ids,
 * and returns the catalog's own strings for the ones the rules keep. It also checks a line's
 * usual shape (personalize.py's `_shape`) for the 64% of lines nobody reads. calm_mail/inputs/
 * idscan.py loads it and holds the Python versions it must agree with (hypothesis tests hold
 * them together); anything not plain goes back to the Python way and the full JSON parse.
 *
 * Build: python -m calm_mail.native (`make` runs it): cc -O2 -shared -fPIC -I<Python's
 * include dir> -o _idscan-<hash of this file><extension suffix> idscan.c
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>


/* What idscan_scan returns besides a count of ids */
#define NOT_PLAIN (-1)  /* not a non-empty compact array of plain strings: parse it in full */
#define UNKNOWN (-2)    /* an id the catalog does not know: the full path counts it */
#define TOO_MANY (-3)   /* more kept ids than the output holds */
#define MAX_KEPT 4096

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

/* The table's hash of buf[0:n], for the tests that make two ids collide. */


/* A table of n ids: id k is keys[offsets[k]:offsets[k + 1]], kept when keep[k] is nonzero.
 * The keys are copied. NULL when memory runs out. */
static idtable *idscan_new(const char *keys, const int64_t *offsets, int64_t n, const uint8_t *keep) {
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

static void idscan_free(idtable *t) {
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
static int64_t idscan_scan(const idtable *t, const char *buf, int64_t start, int64_t end, int32_t *out,
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

/* The usual shape of a Personalize line: personalize.py's `_shape`, which this must equal
 * (a hypothesis test holds the two together; read the rules there). Returns 1 and writes the
 * user id's end (its closing quote) to out[0] and the ids' array end (or -1) to out[1]; 0 for
 * a line in another shape. */
static const char HEAD[] = "{\"input\":{\"userId\":\"";
static const char MIDDLE[] = "\"},\"output\":{\"recommendedItems\":[\"";
static const char TAIL[] = "},\"error\":null}";
static const char ERROR_KEY[] = "\"error\"";
static const char SCORES[] = ",\"scores\"";
#define LEN(s) ((int64_t)sizeof(s) - 1)

/* raw[0:stop] ends with s (stop >= 0) */
static int ends_with(const char *raw, int64_t stop, const char *s, int64_t n) {
    return stop >= n && memcmp(raw + stop - n, s, (size_t)n) == 0;
}

static int64_t find_colon(const char *raw, int64_t n, int64_t from) {
    if (from >= n) return -1;
    const char *c = memchr(raw + from, ':', (size_t)(n - from));
    return c ? c - raw : -1;
}

static int64_t idscan_shape(const char *raw, int64_t n, int64_t *out) {
    if (n < LEN(HEAD) || memcmp(raw, HEAD, LEN(HEAD)) != 0) return 0;
    const char *q = memchr(raw + LEN(HEAD), '"', (size_t)(n - LEN(HEAD)));
    if (!q || q == raw + LEN(HEAD)) return 0;
    int64_t quote = q - raw;
    int64_t end = n;
    if (n >= 2 && raw[n - 2] == '\r' && raw[n - 1] == '\n')
        end = n - 2;
    else if (n >= 1 && raw[n - 1] == '\n')
        end = n - 1;
    if (n - quote < LEN(MIDDLE) || memcmp(raw + quote, MIDDLE, LEN(MIDDLE)) != 0) return 0;
    int64_t last = end - LEN(TAIL) + 2 + LEN(ERROR_KEY); /* the colon of the last "error" */
    if (end - quote < LEN(TAIL) || memcmp(raw + end - LEN(TAIL), TAIL, LEN(TAIL)) != 0) return 0;
    int64_t colon = find_colon(raw, n, quote + LEN(MIDDLE));
    int64_t items_end = -1;
    if (colon == last)
        items_end = end - LEN(TAIL);
    else if (colon >= 0 && ends_with(raw, colon, SCORES, LEN(SCORES)))
        items_end = colon - LEN(SCORES);
    while (colon != last) {
        if (colon < 0 || ends_with(raw, colon, ERROR_KEY, LEN(ERROR_KEY))) return 0;
        colon = find_colon(raw, n, colon + 1);
    }
    for (int64_t i = LEN(HEAD); i < quote; i++) { /* printable ASCII, no backslash */
        unsigned char c = (unsigned char)raw[i];
        if (c < 0x20 || c > 0x7e || c == '\\') return 0;
    }
    out[0] = quote;
    out[1] = (items_end > 0 && raw[items_end - 1] == ']') ? items_end : -1;
    return 1;
}


/* ------------------------------------------------------------------------- the module */

#define CAPSULE "calm_mail.idscan.table"

typedef struct {
    idtable *table;
    PyObject *names; /* a tuple: the catalog's own strings, by position */
    int32_t out[MAX_KEPT + 1];
} scanner;

static void scanner_free(PyObject *capsule) {
    scanner *s = PyCapsule_GetPointer(capsule, CAPSULE);
    if (!s) return;
    idscan_free(s->table);
    Py_XDECREF(s->names);
    PyMem_Free(s);
}

/* table(keys: bytes, offsets: bytes of int64 (n + 1), keep: bytes (n), names: tuple (n)) */
static PyObject *py_table(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[1]) ||
        !PyBytes_Check(args[2]) || !PyTuple_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "table(keys, offsets, keep, names)");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(args[3]);
    if (PyBytes_GET_SIZE(args[1]) != (n + 1) * (Py_ssize_t)sizeof(int64_t) ||
        PyBytes_GET_SIZE(args[2]) != n) {
        PyErr_SetString(PyExc_ValueError, "table: offsets and keep must match names");
        return NULL;
    }
    const int64_t *offsets = (const int64_t *)PyBytes_AS_STRING(args[1]);
    if (offsets[n] != PyBytes_GET_SIZE(args[0])) {
        PyErr_SetString(PyExc_ValueError, "table: the offsets do not end at the keys' end");
        return NULL;
    }
    scanner *s = PyMem_Malloc(sizeof(scanner));
    if (!s) return PyErr_NoMemory();
    s->table = idscan_new(PyBytes_AS_STRING(args[0]), offsets, n,
                          (const uint8_t *)PyBytes_AS_STRING(args[2]));
    if (!s->table) {
        PyMem_Free(s);
        return PyErr_NoMemory();
    }
    Py_INCREF(args[3]);
    s->names = args[3];
    PyObject *capsule = PyCapsule_New(s, CAPSULE, scanner_free);
    if (!capsule) {
        idscan_free(s->table);
        Py_DECREF(s->names);
        PyMem_Free(s);
    }
    return capsule;
}

/* The scanner and the span of raw that (table, raw, start, end) name; 0 with an error set. */
static int span(PyObject *const *args, Py_ssize_t nargs, scanner **s, const char **raw,
                int64_t *start, int64_t *end) {
    if (nargs != 4 || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "(table, raw: bytes, start, end)");
        return 0;
    }
    *s = PyCapsule_GetPointer(args[0], CAPSULE);
    if (!*s) return 0;
    *start = PyLong_AsLongLong(args[2]);
    *end = PyLong_AsLongLong(args[3]);
    if (PyErr_Occurred()) return 0;
    if (*start < 0 || *end < *start || *end > PyBytes_GET_SIZE(args[1])) {
        PyErr_SetString(PyExc_IndexError, "the span is not inside raw");
        return 0;
    }
    *raw = PyBytes_AS_STRING(args[1]);
    return 1;
}

/* walk(table, raw, start, end) -> the number of ids, or NOT_PLAIN, UNKNOWN, TOO_MANY */
static PyObject *py_walk(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs) {
    scanner *s;
    const char *raw;
    int64_t start, end;
    if (!span(args, nargs, &s, &raw, &start, &end)) return NULL;
    return PyLong_FromLongLong(idscan_scan(s->table, raw, start, end, s->out, MAX_KEPT));
}

/* scan(table, raw, start, end) -> (the kept ids, the number of ids), or None */
static PyObject *py_scan(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs) {
    scanner *s;
    const char *raw;
    int64_t start, end;
    if (!span(args, nargs, &s, &raw, &start, &end)) return NULL;
    int64_t total = idscan_scan(s->table, raw, start, end, s->out, MAX_KEPT);
    if (total <= 0) Py_RETURN_NONE;
    int32_t kept = s->out[0];
    PyObject *ids = PyTuple_New(kept);
    if (!ids) return NULL;
    for (int32_t k = 0; k < kept; k++) {
        PyObject *name = PyTuple_GET_ITEM(s->names, s->out[k + 1]);
        Py_INCREF(name);
        PyTuple_SET_ITEM(ids, k, name);
    }
    return Py_BuildValue("(NL)", ids, (long long)total);
}

/* shape(raw) -> (the user id, where the ids' array ends or -1), or None */
static PyObject *py_shape(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 1 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "shape(raw: bytes)");
        return NULL;
    }
    const char *raw = PyBytes_AS_STRING(args[0]);
    int64_t out[2];
    if (!idscan_shape(raw, PyBytes_GET_SIZE(args[0]), out)) Py_RETURN_NONE;
    PyObject *user = PyUnicode_DecodeASCII(raw + LEN(HEAD), out[0] - LEN(HEAD), NULL);
    if (!user) return NULL;
    return Py_BuildValue("(NL)", user, (long long)out[1]);
}

/* hash(raw) -> the table's hash of raw, for the tests that make two ids collide */
static PyObject *py_hash(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 1 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "hash(raw: bytes)");
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(
        hash((const unsigned char *)PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0])));
}

static PyMethodDef methods[] = {
    {"table", (PyCFunction)(void (*)(void))py_table, METH_FASTCALL, NULL},
    {"walk", (PyCFunction)(void (*)(void))py_walk, METH_FASTCALL, NULL},
    {"scan", (PyCFunction)(void (*)(void))py_scan, METH_FASTCALL, NULL},
    {"shape", (PyCFunction)(void (*)(void))py_shape, METH_FASTCALL, NULL},
    {"hash", (PyCFunction)(void (*)(void))py_hash, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_idscan", NULL, -1, methods};

PyMODINIT_FUNC PyInit__idscan(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddIntConstant(m, "ABI", 2) < 0 ||
              PyModule_AddIntConstant(m, "MAX_KEPT", MAX_KEPT) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
