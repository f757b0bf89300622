/*
 * C twin of msgpack_js.py: decodes the msgpack-js@0.3.0 dialect that ZoneMTA's
 * remote log uses. The pure-Python decoder costs ~16 us per ZoneMTA delivery
 * entry, most of the sidecar's per-entry budget; this one costs ~1-2 us
 * (bench/remote_log_stages.py prints both). The two must agree on every input:
 * tests/test_msgpack_js.py runs both over the real encoder's bytes and a fuzz
 * corpus. Errors raise msgpack_js.DecodeError(reason, detail), registered
 * by setup() (ValueError before that): no Python wrapper per datagram.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define MAX_DEPTH 16


typedef struct {
    const unsigned char *buf;
    Py_ssize_t len;
    Py_ssize_t pos;
} reader;

static PyObject *decode_error;  /* msgpack_js.DecodeError, from setup() */

static PyObject *fail(const char *reason, const char *detail) {
    PyObject *args = Py_BuildValue("(ss)", reason, detail);
    if (args) {
        PyErr_SetObject(decode_error ? decode_error : PyExc_ValueError, args);
        Py_DECREF(args);
    }
    return NULL;
}

static int need(reader *r, Py_ssize_t n) { return r->len - r->pos >= n; }

static uint16_t be16(const unsigned char *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static uint64_t be64(const unsigned char *p) { return ((uint64_t)be32(p) << 32) | be32(p + 4); }

static PyObject *parse(reader *r, int depth, int is_key);

/* Short strings repeat in every entry: the map keys ("zone", "mx", ...) and
 * many values (zone names, IPs, TLS versions, domains). A small direct-mapped
 * cache of finished str objects, keyed by their bytes, saves decoding,
 * allocating and hashing them again (~1 us of a delivery entry's ~2.3 us);
 * keys are interned, so Python's lookups by literal compare by identity.
 * Bounded: a string that maps to a taken slot replaces it. */
#define CACHE_SLOTS 1024
#define CACHE_MAX_LEN 24

typedef struct {
    Py_ssize_t n;
    char bytes[CACHE_MAX_LEN];
    PyObject *str;
} cache_slot;

static cache_slot str_cache[CACHE_SLOTS];

static PyObject *text_uncached(reader *r, Py_ssize_t n) {
    PyObject *s = PyUnicode_DecodeUTF8((const char *)r->buf + r->pos, n, "replace");
    r->pos += n;
    return s;
}

static PyObject *text(reader *r, Py_ssize_t n, int is_key) {
    if (!need(r, n)) return fail("truncated", "string past end of datagram");
    if (n > CACHE_MAX_LEN) {
        PyObject *s = text_uncached(r, n);
        if (s && is_key) PyUnicode_InternInPlace(&s);  /* keys repeat in every entry */
        return s;
    }
    const unsigned char *p = r->buf + r->pos;
    uint32_t h = 2166136261u ^ (uint32_t)n;  /* FNV-1a */
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    cache_slot *slot = &str_cache[h & (CACHE_SLOTS - 1)];
    if (slot->str && slot->n == n && memcmp(slot->bytes, p, n) == 0) {
        if (is_key && !PyUnicode_CHECK_INTERNED(slot->str)) {
            PyUnicode_InternInPlace(&slot->str);  /* first met as a value */
        }
        r->pos += n;
        Py_INCREF(slot->str);
        return slot->str;
    }
    PyObject *s = text_uncached(r, n);
    if (!s) return NULL;
    if (is_key) {
        PyUnicode_InternInPlace(&s);
    } else if (PyObject_Hash(s) == -1) {  /* computed once, kept in the object */
        PyErr_Clear();
    }
    Py_INCREF(s);
    Py_XSETREF(slot->str, s);
    slot->n = n;
    memcpy(slot->bytes, p, n);
    return s;
}

static PyObject *container(reader *r, int is_map, Py_ssize_t n, int depth) {
    if (depth >= MAX_DEPTH) return fail("too_deep", "more than 16 nested containers");
    /* every element takes at least one byte: refuse what cannot fit before allocating */
    if (n * (is_map ? 2 : 1) > r->len - r->pos) {
        return fail("truncated", is_map ? "map past end of datagram" : "arr past end of datagram");
    }
    depth++;
    if (!is_map) {
        PyObject *list = PyList_New(n);
        if (!list) return NULL;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *v = parse(r, depth, 0);
            if (!v) { Py_DECREF(list); return NULL; }
            PyList_SET_ITEM(list, i, v);
        }
        return list;
    }
    /* Not _PyDict_NewPresized: in CPython 3.11 that makes a dict of the general
     * kind, whose every lookup by str key takes the slow path. An entry's fields
     * are looked up ~40 times, so growing a str-keyed dict as it fills is faster:
     * the whole pipeline ran 3 % faster (A/B in one process, 30,000 entries). */
    PyObject *dict = PyDict_New();
    if (!dict) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = parse(r, depth, 1);
        if (!k) { Py_DECREF(dict); return NULL; }
        if (!PyUnicode_CheckExact(k)) {
            if (PyLong_Check(k) || PyFloat_Check(k) || k == Py_None) {
                PyObject *s = PyObject_Str(k);
                Py_DECREF(k);
                if (!s) { Py_DECREF(dict); return NULL; }
                k = s;
            } else {
                Py_DECREF(k); Py_DECREF(dict);
                return fail("bad_key", "map key is not a string or number");
            }
        }
        PyObject *v = parse(r, depth, 0);
        if (!v) { Py_DECREF(k); Py_DECREF(dict); return NULL; }
        int rc = PyDict_SetItem(dict, k, v);
        Py_DECREF(k); Py_DECREF(v);
        if (rc < 0) { Py_DECREF(dict); return NULL; }
    }
    return dict;
}

static PyObject *parse(reader *r, int depth, int is_key) {
    if (!need(r, 1)) return fail("truncated", "value past end of datagram");
    unsigned char c = r->buf[r->pos++];
    const unsigned char *p = r->buf + r->pos;
    if (c < 0x80) return PyLong_FromLong(c);
    if (c >= 0xe0) return PyLong_FromLong((long)c - 0x100);
    if (c >= 0xa0 && c < 0xc0) return text(r, c & 0x1f, is_key);
    if (c < 0x90) return container(r, 1, c & 0x0f, depth);
    if (c < 0xa0) return container(r, 0, c & 0x0f, depth);
    switch (c) {
    case 0xc0: Py_RETURN_NONE;
    case 0xc2: Py_RETURN_FALSE;
    case 0xc3: Py_RETURN_TRUE;
    case 0xc4: Py_RETURN_NONE;  /* msgpack-js: undefined */
    case 0xcc: if (!need(r, 1)) break; r->pos += 1; return PyLong_FromLong(p[0]);
    case 0xcd: if (!need(r, 2)) break; r->pos += 2; return PyLong_FromLong(be16(p));
    case 0xce: if (!need(r, 4)) break; r->pos += 4; return PyLong_FromUnsignedLong(be32(p));
    case 0xcf: if (!need(r, 8)) break; r->pos += 8; return PyLong_FromUnsignedLongLong(be64(p));
    case 0xd0: if (!need(r, 1)) break; r->pos += 1; return PyLong_FromLong((int8_t)p[0]);
    case 0xd1: if (!need(r, 2)) break; r->pos += 2; return PyLong_FromLong((int16_t)be16(p));
    case 0xd2: if (!need(r, 4)) break; r->pos += 4; return PyLong_FromLong((int32_t)be32(p));
    case 0xd3: if (!need(r, 8)) break; r->pos += 8; return PyLong_FromLongLong((int64_t)be64(p));
    case 0xca: {
        if (!need(r, 4)) break;
        uint32_t u = be32(p); float f; memcpy(&f, &u, 4); r->pos += 4;
        return PyFloat_FromDouble(f);
    }
    case 0xcb: {
        if (!need(r, 8)) break;
        uint64_t u = be64(p); double d; memcpy(&d, &u, 8); r->pos += 8;
        return PyFloat_FromDouble(d);
    }
    case 0xda: case 0xdb: case 0xd8: case 0xd9:
    case 0xdc: case 0xdd: case 0xde: case 0xdf: {
        int wide = (c == 0xdb || c == 0xd9 || c == 0xdd || c == 0xdf);
        if (!need(r, wide ? 4 : 2)) return fail("truncated", "length past end of datagram");
        Py_ssize_t n = wide ? (Py_ssize_t)be32(p) : (Py_ssize_t)be16(p);
        r->pos += wide ? 4 : 2;
        if (c == 0xda || c == 0xdb) return text(r, n, is_key);
        if (c == 0xd8 || c == 0xd9) {
            if (!need(r, n)) return fail("truncated", "buffer past end of datagram");
            PyObject *b = PyBytes_FromStringAndSize((const char *)r->buf + r->pos, n);
            r->pos += n;
            return b;
        }
        return container(r, c == 0xde || c == 0xdf, n, depth);
    }
    default: {
        char detail[48];
        snprintf(detail, sizeof detail, "code 0x%02x at offset %zd", c, r->pos - 1);
        return fail("unknown_type", detail);
    }
    }
    return fail("truncated", "number past end of datagram");
}

static PyObject *py_decode(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    reader r = {view.buf, view.len, 0};
    PyObject *out = NULL;
    if (r.len == 0) {
        fail("empty", "");
    } else {
        out = parse(&r, 0, 0);
        if (out && r.pos != r.len) {
            char detail[48];
            snprintf(detail, sizeof detail, "%zd bytes after the value", r.len - r.pos);
            Py_CLEAR(out);
            fail("trailing_bytes", detail);
        }
    }
    PyBuffer_Release(&view);
    return out;
}

static PyObject *setup(PyObject *self, PyObject *cls) {
    if (!PyExceptionClass_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "setup(DecodeError) takes an exception class");
        return NULL;
    }
    Py_XSETREF(decode_error, Py_NewRef(cls));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"decode", py_decode, METH_O, "Decode one msgpack-js value that must fill `data` exactly."},
    {"setup", setup, METH_O, "setup(DecodeError): the class errors are raised as (reason, detail)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_msgpack_js", NULL, -1, methods};

PyMODINIT_FUNC PyInit__msgpack_js(void) {
    return PyModule_Create(&module);
}
