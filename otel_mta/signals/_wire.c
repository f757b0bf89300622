/*
 * C twins of the hot encoders in wire.py, logs.py and traces.py: OTLP
 * attributes, log records, spans and export requests straight to protobuf wire
 * bytes. Every mail event is encoded into a log record (and a delivery into a
 * span as well): here that costs ~1.5 us per entry, attributes included, and
 * ten times as much in Python (bench/remote_log_stages.py prints both); it was
 * the largest share of an entry's cost. Each function has a Python twin that
 * stays the reference; tests/test_wire.py checks both produce the same bytes
 * and that the official protobuf classes parse them. encode_log and
 * encode_span take their attributes encoded, or as the dict(s) to encode: one
 * call per record.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 8

/* -- an output buffer: starts on the caller's stack, moves to the heap if it must grow */
typedef struct {
    char *p;
    Py_ssize_t len, cap;
    int heap;
} buf;

#define STACK_BUF(name, size) char name##_stack[size]; buf name = {name##_stack, 0, size, 0}

static int grow(buf *b, Py_ssize_t need) {
    if (b->len + need <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + need) cap *= 2;
    char *p;
    if (b->heap) {
        p = PyMem_Realloc(b->p, cap);
    } else {
        p = PyMem_Malloc(cap);
        if (p && b->len) memcpy(p, b->p, b->len);
    }
    if (!p) { PyErr_NoMemory(); return -1; }
    b->p = p; b->cap = cap; b->heap = 1;
    return 0;
}

static void buf_free(buf *b) {
    if (b->heap) PyMem_Free(b->p);
}

/* the buffer as a bytes object; frees the buffer either way */
static PyObject *buf_bytes(buf *b) {
    PyObject *r = PyBytes_FromStringAndSize(b->len ? b->p : "", b->len);
    buf_free(b);
    return r;
}

static int vsize(uint64_t v) {
    int n = 1;
    while (v > 0x7f) { v >>= 7; n++; }
    return n;
}

/* writers that assume room was made with grow() */
static void w_byte(buf *b, unsigned char c) { b->p[b->len++] = (char)c; }
static void w_raw(buf *b, const void *src, Py_ssize_t n) { memcpy(b->p + b->len, src, n); b->len += n; }
static void w_varint(buf *b, uint64_t v) {
    while (v > 0x7f) { b->p[b->len++] = (char)((v & 0x7f) | 0x80); v >>= 7; }
    b->p[b->len++] = (char)v;
}
static void w_fixed64(buf *b, uint64_t v) {  /* little-endian hosts only: checked at import */
    memcpy(b->p + b->len, &v, 8);
    b->len += 8;
}

static int put(buf *b, const void *src, Py_ssize_t n) {
    if (grow(b, n) < 0) return -1;
    w_raw(b, src, n);
    return 0;
}


/* tag, length, payload */
static int put_ld(buf *b, unsigned char tag, const char *data, Py_ssize_t n) {
    if (grow(b, 1 + 10 + n) < 0) return -1;
    w_byte(b, tag);
    w_varint(b, (uint64_t)n);
    w_raw(b, data, n);
    return 0;
}

/* UTF-8 of a str, lone surrogates replaced as Python's "replace" does;
 * *tmp holds an object to release afterwards (or NULL). */
static const char *utf8(PyObject *s, Py_ssize_t *n, PyObject **tmp) {
    *tmp = NULL;
    const char *u = PyUnicode_AsUTF8AndSize(s, n);
    if (u) return u;
    PyErr_Clear();
    *tmp = PyUnicode_AsEncodedString(s, "utf-8", "replace");
    if (!*tmp) return NULL;
    *n = PyBytes_GET_SIZE(*tmp);
    return PyBytes_AS_STRING(*tmp);
}

static int put_str(buf *out, unsigned char tag, PyObject *s) {
    Py_ssize_t n;
    PyObject *tmp;
    const char *u = utf8(s, &n, &tmp);
    if (!u) return -1;
    int rc = put_ld(out, tag, u, n);
    Py_XDECREF(tmp);
    return rc;
}

/* -- attribute value length limits (wire.set_limits) ------------------------
 * OpenTelemetry's OTEL_{,LOGRECORD_,SPAN_}ATTRIBUTE_VALUE_LENGTH_LIMIT: a string
 * longer than the limit is cut to that many characters (code points), and so
 * is each string inside an array or map. Keys named free text in the catalog
 * (and passed-through GELF fields) get the smaller `text` limit as well. A
 * string at most `low` characters long, nearly every one, costs one compare. */
typedef struct {
    Py_ssize_t all;    /* every string attribute */
    Py_ssize_t text;   /* free-text keys: min(all, free_text) */
    Py_ssize_t low;    /* min(all, text): a longer string is looked at */
    int idx;           /* which count: 0 log records, 1 spans */
} limit_t;

static limit_t LIMITS[2] = {{PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, 0},
                            {PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, 1}};
static PyObject *FREE_KEYS = NULL;       /* a frozenset of free-text keys */
static PyObject *FREE_PREFIXES = NULL;   /* a tuple of free-text key prefixes */
static unsigned long long TRUNCATED[2];

/* the limits of an attribute field tag: log records', spans' (and span events'), or none */
static const limit_t *limit_for(unsigned char tag) {
    if (tag == 0x32) return &LIMITS[0];
    if (tag == 0x4a || tag == 0x1a) return &LIMITS[1];
    return NULL;
}

/* the most characters a string value of key k may keep; -1 on error */
static Py_ssize_t cap_for(const limit_t *lim, PyObject *k) {
    if (lim->text >= lim->all) return lim->all;
    int free_text = FREE_KEYS ? PySet_Contains(FREE_KEYS, k) : 0;
    if (free_text < 0) return -1;
    if (!free_text && FREE_PREFIXES) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(FREE_PREFIXES) && !free_text; i++) {
            Py_ssize_t m = PyUnicode_Tailmatch(k, PyTuple_GET_ITEM(FREE_PREFIXES, i), 0, PY_SSIZE_T_MAX, -1);
            if (m < 0) return -1;
            free_text = (int)m;
        }
    }
    return free_text ? lim->text : lim->all;
}

/* bytes of the first `chars` characters of UTF-8 text s[0:n] */
static Py_ssize_t utf8_prefix(const char *s, Py_ssize_t n, Py_ssize_t chars) {
    Py_ssize_t seen = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {  /* a character starts here */
            if (seen == chars) return i;
            seen++;
        }
    }
    return n;
}

/* -- attribute values ------------------------------------------------------
 * A scalar AnyValue's size is known before writing it, so a KeyValue with a
 * scalar value is written in one go; lists and maps go through temporaries. */
typedef struct {
    unsigned char tag;  /* AnyValue field */
    const char *data;   /* string or bytes payload; NULL for varint / double */
    Py_ssize_t n;
    uint64_t u;         /* varint value, or the double's bits */
    PyObject *tmp;      /* keeps `data` alive */
} scalar;

/* 1: a scalar (sc filled, release sc->tmp), 0: a list, tuple or dict, -1: error.
 * A str longer than `cap` characters is cut to `cap` and counted in TRUNCATED[idx]. */
static int scalar_of(PyObject *v, scalar *sc, Py_ssize_t cap, int idx) {
    sc->tmp = NULL;
    sc->data = NULL;
    if (PyUnicode_CheckExact(v)) {
        sc->tag = 0x0a;
        sc->data = utf8(v, &sc->n, &sc->tmp);
        if (!sc->data) return -1;
        if (PyUnicode_GET_LENGTH(v) > cap) {
            /* lone surrogates were replaced one for one: characters still count the same */
            sc->n = PyUnicode_IS_ASCII(v) ? cap : utf8_prefix(sc->data, sc->n, cap);
            TRUNCATED[idx]++;
        }
        return 1;
    }
    if (PyBool_Check(v)) {
        sc->tag = 0x10;
        sc->u = v == Py_True;
        return 1;
    }
    if (PyLong_CheckExact(v)) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (!overflow) {
            if (x == -1 && PyErr_Occurred()) return -1;
            sc->tag = 0x18;
            sc->u = (uint64_t)x;
            return 1;
        }
        /* beyond int64: keep the digits as text (below) */
    } else if (PyFloat_CheckExact(v)) {
        double d = PyFloat_AS_DOUBLE(v);
        sc->tag = 0x21;
        memcpy(&sc->u, &d, 8);
        return 1;
    } else if (PyList_CheckExact(v) || PyTuple_CheckExact(v) || PyDict_CheckExact(v)) {
        return 0;
    } else if (PyBytes_CheckExact(v)) {
        sc->tag = 0x3a;
        sc->data = PyBytes_AS_STRING(v);
        sc->n = PyBytes_GET_SIZE(v);
        return 1;
    }
    /* anything else: its str() */
    PyObject *s = PyObject_Str(v);
    if (!s) return -1;
    PyObject *tmp;
    sc->tag = 0x0a;
    sc->data = utf8(s, &sc->n, &tmp);
    if (!sc->data) { Py_DECREF(s); return -1; }
    if (tmp) { Py_DECREF(s); sc->tmp = tmp; } else { sc->tmp = s; }
    return 1;
}

static Py_ssize_t scalar_size(const scalar *sc) {
    if (sc->data) return 1 + vsize((uint64_t)sc->n) + sc->n;
    if (sc->tag == 0x21) return 9;
    return 1 + vsize(sc->u);
}

static void w_scalar(buf *b, const scalar *sc) {
    w_byte(b, sc->tag);
    if (sc->data) {
        w_varint(b, (uint64_t)sc->n);
        w_raw(b, sc->data, sc->n);
    } else if (sc->tag == 0x21) {
        w_fixed64(b, sc->u);
    } else {
        w_varint(b, sc->u);
    }
}

static int any_value(buf *out, PyObject *v, int depth, Py_ssize_t cap, int idx);
static int key_value(buf *out, PyObject *k, PyObject *v, int depth, Py_ssize_t cap, int idx);

/* An AnyValue message body for v; strings at any depth keep at most `cap` characters */
static int any_value(buf *out, PyObject *v, int depth, Py_ssize_t cap, int idx) {
    if (depth > MAX_DEPTH) {
        PyErr_SetString(PyExc_ValueError, "attribute value nested too deeply");
        return -1;
    }
    scalar sc;
    int kind = scalar_of(v, &sc, cap, idx);
    if (kind < 0) return -1;
    if (kind == 1) {
        int rc = grow(out, scalar_size(&sc));
        if (rc == 0) w_scalar(out, &sc);
        Py_XDECREF(sc.tmp);
        return rc;
    }
    buf inner = {0};
    int rc = 0;
    if (PyDict_CheckExact(v)) {
        PyObject *k, *item;
        Py_ssize_t pos = 0;
        while (rc == 0 && PyDict_Next(v, &pos, &k, &item)) {
            buf kv = {0};
            PyObject *ks = PyUnicode_Check(k) ? (Py_INCREF(k), k) : PyObject_Str(k);
            rc = ks ? key_value(&kv, ks, item, depth + 1, cap, idx) : -1;
            Py_XDECREF(ks);
            if (rc == 0) rc = put_ld(&inner, 0x0a, kv.p, kv.len);
            buf_free(&kv);
        }
        if (rc == 0) rc = put_ld(out, 0x32, inner.p, inner.len);
    } else {
        PyObject *seq = PySequence_Fast(v, "");
        if (!seq) return -1;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        for (Py_ssize_t i = 0; rc == 0 && i < n; i++) {
            buf av = {0};
            rc = any_value(&av, PySequence_Fast_GET_ITEM(seq, i), depth + 1, cap, idx);
            if (rc == 0) rc = put_ld(&inner, 0x0a, av.p, av.len);
            buf_free(&av);
        }
        Py_DECREF(seq);
        if (rc == 0) rc = put_ld(out, 0x2a, inner.p, inner.len);
    }
    buf_free(&inner);
    return rc;
}

/* A KeyValue message body */
static int key_value(buf *out, PyObject *k, PyObject *v, int depth, Py_ssize_t cap, int idx) {
    if (put_str(out, 0x0a, k) < 0) return -1;
    buf av = {0};
    int rc = any_value(&av, v, depth, cap, idx);
    if (rc == 0) rc = put_ld(out, 0x12, av.p, av.len);
    buf_free(&av);
    return rc;
}

/* One attribute as field `tag` (a KeyValue with its length in front), its
 * strings within the tag's length limits (lim: NULL for none) */
static int put_attr(buf *out, unsigned char tag, PyObject *k, PyObject *v, const limit_t *lim) {
    Py_ssize_t cap = PY_SSIZE_T_MAX;
    int idx = 0;
    if (lim) {
        idx = lim->idx;
        /* only a long string or a container needs its key's limit worked out */
        int look = PyUnicode_CheckExact(v) ? PyUnicode_GET_LENGTH(v) > lim->low
                                           : (PyList_CheckExact(v) || PyTuple_CheckExact(v) || PyDict_CheckExact(v));
        if (look && (cap = cap_for(lim, k)) < 0) return -1;
    }
    Py_ssize_t kn;
    PyObject *ktmp;
    const char *ks = utf8(k, &kn, &ktmp);
    if (!ks) return -1;
    scalar sc;
    int rc = scalar_of(v, &sc, cap, idx);
    if (rc == 1) {
        Py_ssize_t av = scalar_size(&sc);
        Py_ssize_t kv = 1 + vsize((uint64_t)kn) + kn + 1 + vsize((uint64_t)av) + av;
        rc = grow(out, 1 + vsize((uint64_t)kv) + kv);
        if (rc == 0) {
            w_byte(out, tag);
            w_varint(out, (uint64_t)kv);
            w_byte(out, 0x0a);
            w_varint(out, (uint64_t)kn);
            w_raw(out, ks, kn);
            w_byte(out, 0x12);
            w_varint(out, (uint64_t)av);
            w_scalar(out, &sc);
        }
        Py_XDECREF(sc.tmp);
    } else if (rc == 0) {  /* a list or map value */
        buf kv = {0};
        rc = key_value(&kv, k, v, 0, cap, idx);
        if (rc == 0) rc = put_ld(out, tag, kv.p, kv.len);
        buf_free(&kv);
    }
    Py_XDECREF(ktmp);
    return rc;
}

/* every non-None pair of a dict, or of each dict of a tuple of dicts */
static int put_attrs(buf *out, unsigned char tag, PyObject *attrs) {
    if (PyTuple_CheckExact(attrs)) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(attrs); i++) {
            if (put_attrs(out, tag, PyTuple_GET_ITEM(attrs, i)) < 0) return -1;
        }
        return 0;
    }
    const limit_t *lim = limit_for(tag);
    if (!PyDict_Check(attrs)) {
        PyErr_SetString(PyExc_TypeError, "attributes must be a dict or a tuple of dicts");
        return -1;
    }
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(attrs, &pos, &k, &v)) {
        if (v == Py_None) continue;
        if (!PyUnicode_Check(k)) {
            PyErr_SetString(PyExc_TypeError, "attribute keys must be str");
            return -1;
        }
        if (put_attr(out, tag, k, v, lim) < 0) return -1;
    }
    return 0;
}

static int check_tag(int tag) {
    if (tag < 0 || tag > 0x7f) {
        PyErr_SetString(PyExc_ValueError, "tag must be a one-byte field tag");
        return -1;
    }
    return 0;
}

/* encode_attrs(tag, attrs[, cached_keys]) -> bytes: every non-None pair as field `tag` */
static PyObject *encode_attrs(PyObject *self, PyObject *args) {
    int tag;
    PyObject *attrs, *ignored = NULL;  /* cached_keys: the Python twin's cache; not needed here */
    if (!PyArg_ParseTuple(args, "iO|O", &tag, &attrs, &ignored)) return NULL;
    if (check_tag(tag) < 0) return NULL;
    STACK_BUF(out, 2048);
    if (put_attrs(&out, (unsigned char)tag, attrs) < 0) { buf_free(&out); return NULL; }
    return buf_bytes(&out);
}

/* -- arguments: positional or by keyword, like the Python twins ------------- */
static int parse_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, const char *const *names,
                      int nreq, int nmax, PyObject **out, const char *fname) {
    if (nargs > nmax) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments", fname, nmax);
        return -1;
    }
    for (int i = 0; i < nmax; i++) out[i] = i < nargs ? args[i] : NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t j = 0; j < nkw; j++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, j);
        int i = 0;
        while (i < nmax && PyUnicode_CompareWithASCIIString(key, names[i]) != 0) i++;
        if (i == nmax || out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected or repeated argument %R", fname, key);
            return -1;
        }
        out[i] = args[nargs + j];
    }
    for (int i = 0; i < nreq; i++) {
        if (!out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() missing argument '%s'", fname, names[i]);
            return -1;
        }
    }
    return 0;
}

static int truthy(PyObject *o) { return o && o != Py_None && PyObject_IsTrue(o) == 1; }

static int as_u64(PyObject *o, uint64_t *v) {
    *v = PyLong_AsUnsignedLongLong(o);
    return (*v == (uint64_t)-1 && PyErr_Occurred()) ? -1 : 0;
}

/* a bytes-like field: tag, length, data */
static int put_bytes_field(buf *out, unsigned char tag, PyObject *o) {
    Py_buffer view;
    if (PyObject_GetBuffer(o, &view, PyBUF_SIMPLE) < 0) return -1;
    int rc = put_ld(out, tag, view.buf, view.len);
    PyBuffer_Release(&view);
    return rc;
}

static int put_buffer(buf *out, PyObject *o) {
    Py_buffer view;
    if (PyObject_GetBuffer(o, &view, PyBUF_SIMPLE) < 0) return -1;
    int rc = put(out, view.buf, view.len);
    PyBuffer_Release(&view);
    return rc;
}

/* a record's attributes: already encoded (bytes), or a dict / tuple of dicts to encode under `tag` */
static int put_attrs_or_bytes(buf *out, unsigned char tag, PyObject *attrs) {
    if (PyDict_Check(attrs) || PyTuple_CheckExact(attrs)) return put_attrs(out, tag, attrs);
    return put_buffer(out, attrs);
}

static int put_fixed64(buf *out, unsigned char tag, uint64_t v) {
    if (grow(out, 9) < 0) return -1;
    w_byte(out, tag);
    w_fixed64(out, v);
    return 0;
}

static int put_varint_field(buf *out, unsigned char tag, uint64_t v) {
    if (grow(out, 11) < 0) return -1;
    w_byte(out, tag);
    w_varint(out, v);
    return 0;
}

static const char *const SEVERITY_TEXT[] = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"};

/* encode_log(time_ns, observed_ns, severity, body, attrs, trace_id=None, span_id=None,
 *            event_name=None, severity_text=None) -> bytes: a LogRecord (logs.encode_log_py) */
static PyObject *encode_log(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    static const char *const names[] = {"time_ns", "observed_ns", "severity", "body", "attrs", "trace_id",
                                        "span_id", "event_name", "severity_text"};
    PyObject *a[9];
    if (parse_args(args, nargs, kwnames, names, 5, 9, a, "encode_log") < 0) return NULL;
    PyObject *trace_id = a[5], *span_id = a[6], *event_name = a[7], *severity_text = a[8];
    uint64_t observed;
    long long severity = PyLong_AsLongLong(a[2]);
    if (severity == -1 && PyErr_Occurred()) return NULL;
    if (!PyUnicode_Check(a[3])) {
        PyErr_SetString(PyExc_TypeError, "body must be str");
        return NULL;
    }
    STACK_BUF(out, 2048);
    if (truthy(a[0])) {
        uint64_t t;
        if (as_u64(a[0], &t) < 0 || put_fixed64(&out, 0x09, t) < 0) goto error;
    }
    if (put_varint_field(&out, 0x10, (uint64_t)severity) < 0) goto error;
    if (severity_text && severity_text != Py_None) {
        if (!PyUnicode_Check(severity_text)) {
            PyErr_SetString(PyExc_TypeError, "severity_text must be str");
            goto error;
        }
        if (PyUnicode_GET_LENGTH(severity_text) && put_str(&out, 0x1a, severity_text) < 0) goto error;
    } else if (severity >= 1 && severity <= 24) {  /* the name of its range: INFO for 9..12 */
        const char *t = SEVERITY_TEXT[(severity - 1) / 4];
        if (put_ld(&out, 0x1a, t, (Py_ssize_t)strlen(t)) < 0) goto error;
    }
    {  /* body: an AnyValue holding the string */
        Py_ssize_t n;
        PyObject *tmp;
        const char *u = utf8(a[3], &n, &tmp);
        if (!u) goto error;
        Py_ssize_t inner = 1 + vsize((uint64_t)n) + n;
        int rc = grow(&out, 1 + vsize((uint64_t)inner) + inner);
        if (rc == 0) {
            w_byte(&out, 0x2a);
            w_varint(&out, (uint64_t)inner);
            w_byte(&out, 0x0a);
            w_varint(&out, (uint64_t)n);
            w_raw(&out, u, n);
        }
        Py_XDECREF(tmp);
        if (rc < 0) goto error;
    }
    if (put_attrs_or_bytes(&out, 0x32, a[4]) < 0) goto error;
    if (truthy(trace_id)) {
        if (put_bytes_field(&out, 0x4a, trace_id) < 0) goto error;
        if (truthy(span_id) && put_bytes_field(&out, 0x52, span_id) < 0) goto error;
    }
    if (as_u64(a[1], &observed) < 0 || put_fixed64(&out, 0x59, observed) < 0) goto error;
    if (truthy(event_name) && put_str(&out, 0x62, event_name) < 0) goto error;
    return buf_bytes(&out);
error:
    buf_free(&out);
    return NULL;
}

/* encode_span(trace_id, span_id, parent_id, name, kind, start_ns, end_ns, attrs, status=0,
 *             status_message=None, events=None) -> bytes: a Span (traces.encode_span_py) */
static PyObject *encode_span(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    static const char *const names[] = {"trace_id", "span_id", "parent_id", "name", "kind", "start_ns",
                                        "end_ns", "attrs", "status", "status_message", "events"};
    PyObject *a[11];
    if (parse_args(args, nargs, kwnames, names, 8, 11, a, "encode_span") < 0) return NULL;
    PyObject *status_o = a[8], *status_message = a[9], *events = a[10];
    long kind = PyLong_AsLong(a[4]);
    if (kind == -1 && PyErr_Occurred()) return NULL;
    if (kind < 1 || kind > 5) {
        PyErr_SetString(PyExc_ValueError, "span kind must be 1..5");
        return NULL;
    }
    long status = 0;
    if (status_o && status_o != Py_None) {
        status = PyLong_AsLong(status_o);
        if (status == -1 && PyErr_Occurred()) return NULL;
        if (status < 0 || status > 255) {
            PyErr_SetString(PyExc_ValueError, "status must be 0..255");
            return NULL;
        }
    }
    if (!PyUnicode_Check(a[3])) {
        PyErr_SetString(PyExc_TypeError, "name must be str");
        return NULL;
    }
    uint64_t start, end;
    if (as_u64(a[5], &start) < 0 || as_u64(a[6], &end) < 0) return NULL;
    STACK_BUF(out, 2048);
    if (put_bytes_field(&out, 0x0a, a[0]) < 0 || put_bytes_field(&out, 0x12, a[1]) < 0) goto error;
    if (truthy(a[2]) && put_bytes_field(&out, 0x22, a[2]) < 0) goto error;
    if (put_str(&out, 0x2a, a[3]) < 0) goto error;
    if (put_varint_field(&out, 0x30, (uint64_t)kind) < 0) goto error;
    if (put_fixed64(&out, 0x39, start) < 0 || put_fixed64(&out, 0x41, end > start ? end : start) < 0) goto error;
    if (put_attrs_or_bytes(&out, 0x4a, a[7]) < 0) goto error;
    if (truthy(events)) {
        PyObject *seq = PySequence_Fast(events, "events must be a sequence of (time_ns, name, attrs)");
        if (!seq) goto error;
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
            PyObject *ev = PySequence_Fast_GET_ITEM(seq, i);
            PyObject *t, *ev_name, *ev_attrs;
            uint64_t ts;
            if (!PyArg_ParseTuple(ev, "OUO", &t, &ev_name, &ev_attrs) || as_u64(t, &ts) < 0) {
                Py_DECREF(seq);
                goto error;
            }
            buf body = {0};
            int rc = put_fixed64(&body, 0x09, ts);
            if (rc == 0) rc = put_str(&body, 0x12, ev_name);
            if (rc == 0) rc = put_attrs(&body, 0x1a, ev_attrs);
            if (rc == 0) rc = put_ld(&out, 0x5a, body.p, body.len);
            buf_free(&body);
            if (rc < 0) {
                Py_DECREF(seq);
                goto error;
            }
        }
        Py_DECREF(seq);
    }
    if (status) {
        buf st = {0};
        int rc = 0;
        if (truthy(status_message)) {
            if (!PyUnicode_Check(status_message)) {
                PyErr_SetString(PyExc_TypeError, "status_message must be str");
                rc = -1;
            } else {
                rc = put_str(&st, 0x12, status_message);
            }
        }
        if (rc == 0) rc = put_varint_field(&st, 0x18, (uint64_t)status);
        if (rc == 0) rc = put_ld(&out, 0x7a, st.p, st.len);
        buf_free(&st);
        if (rc < 0) goto error;
    }
    /* W3C trace flags: sampled (we never sample at the source; tail sampling decides) */
    if (put(&out, "\x85\x01\x01\x00\x00\x00", 6) < 0) goto error;
    return buf_bytes(&out);
error:
    buf_free(&out);
    return NULL;
}

/* request(groups) -> bytes: an Export{Logs,Trace}ServiceRequest from
 * (resource, scope, records) groups (wire.request_py). Sizes first, then one
 * copy of every record into the result. */
static PyObject *request(PyObject *self, PyObject *groups_o) {
    PyObject *groups = PySequence_Fast(groups_o, "groups must be a sequence");
    if (!groups) return NULL;
    Py_ssize_t ng = PySequence_Fast_GET_SIZE(groups), total = 0;
    PyObject *result = NULL;
    buf out = {0};
    /* per group: resource, scope, records (a list) and the group's two inner sizes */
    Py_ssize_t *sizes = PyMem_Calloc(ng ? ng * 2 : 1, sizeof(Py_ssize_t));
    PyObject **parts = PyMem_Calloc(ng ? ng * 3 : 1, sizeof(PyObject *));
    if (!sizes || !parts) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t g = 0; g < ng; g++) {
        PyObject *res, *scp, *recs;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(groups, g), "SSO", &res, &scp, &recs)) goto done;
        PyObject *seq = PySequence_Fast(recs, "records must be a sequence of bytes");
        if (!seq) goto done;
        parts[3 * g] = res; parts[3 * g + 1] = scp; parts[3 * g + 2] = seq;
        Py_ssize_t inner = 1 + vsize(PyBytes_GET_SIZE(scp)) + PyBytes_GET_SIZE(scp);
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
            PyObject *r = PySequence_Fast_GET_ITEM(seq, i);
            if (!PyBytes_Check(r)) { PyErr_SetString(PyExc_TypeError, "records must be bytes"); goto done; }
            inner += 1 + vsize(PyBytes_GET_SIZE(r)) + PyBytes_GET_SIZE(r);
        }
        Py_ssize_t rn = PyBytes_GET_SIZE(res);
        Py_ssize_t item = 1 + vsize(rn) + rn + 1 + vsize(inner) + inner;  /* ResourceX */
        sizes[2 * g] = inner; sizes[2 * g + 1] = item;
        total += 1 + vsize(item) + item;
    }
    result = PyBytes_FromStringAndSize(NULL, total);
    if (!result) goto done;
    out.p = PyBytes_AS_STRING(result);
    out.cap = total;  /* exactly sized: the writers below never grow it */
    for (Py_ssize_t g = 0; g < ng; g++) {
        PyObject *res = parts[3 * g], *scp = parts[3 * g + 1], *seq = parts[3 * g + 2];
        w_byte(&out, 0x0a); w_varint(&out, sizes[2 * g + 1]);                 /* resource_x */
        w_byte(&out, 0x0a); w_varint(&out, PyBytes_GET_SIZE(res));             /* .resource */
        w_raw(&out, PyBytes_AS_STRING(res), PyBytes_GET_SIZE(res));
        w_byte(&out, 0x12); w_varint(&out, sizes[2 * g]);                     /* .scope_x */
        w_byte(&out, 0x0a); w_varint(&out, PyBytes_GET_SIZE(scp));             /* .scope */
        w_raw(&out, PyBytes_AS_STRING(scp), PyBytes_GET_SIZE(scp));
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {      /* .records */
            PyObject *r = PySequence_Fast_GET_ITEM(seq, i);
            w_byte(&out, 0x12); w_varint(&out, PyBytes_GET_SIZE(r));
            w_raw(&out, PyBytes_AS_STRING(r), PyBytes_GET_SIZE(r));
        }
    }
done:
    if (parts) {
        for (Py_ssize_t g = 0; g < ng; g++) Py_XDECREF(parts[3 * g + 2]);
        PyMem_Free(parts);
    }
    PyMem_Free(sizes);
    Py_DECREF(groups);
    return result;
}

static Py_ssize_t limit_arg(PyObject *o) {
    if (o == Py_None) return PY_SSIZE_T_MAX;
    Py_ssize_t n = PyLong_AsSsize_t(o);
    if (n == -1 && PyErr_Occurred()) return -1;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "a length limit must be >= 0 or None");
        return -1;
    }
    return n;
}

/* set_limits(logs, spans, free_text, free_keys, free_prefixes): see wire.set_limits */
static PyObject *set_limits(PyObject *self, PyObject *args) {
    PyObject *logs_o, *spans_o, *text_o, *keys, *prefixes;
    if (!PyArg_ParseTuple(args, "OOOO!O!", &logs_o, &spans_o, &text_o, &PyFrozenSet_Type, &keys,
                          &PyTuple_Type, &prefixes)) return NULL;
    Py_ssize_t all[2] = {limit_arg(logs_o), limit_arg(spans_o)}, text = limit_arg(text_o);
    if (all[0] < 0 || all[1] < 0 || text < 0) return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(prefixes); i++) {
        if (!PyUnicode_Check(PyTuple_GET_ITEM(prefixes, i))) {
            PyErr_SetString(PyExc_TypeError, "free-text prefixes must be str");
            return NULL;
        }
    }
    int any_free = PySet_GET_SIZE(keys) > 0 || PyTuple_GET_SIZE(prefixes) > 0;
    for (int i = 0; i < 2; i++) {
        LIMITS[i].all = all[i];
        LIMITS[i].text = any_free && text < all[i] ? text : all[i];
        LIMITS[i].low = LIMITS[i].text;
    }
    Py_INCREF(keys);
    Py_XSETREF(FREE_KEYS, keys);
    Py_INCREF(prefixes);
    Py_XSETREF(FREE_PREFIXES, prefixes);
    Py_RETURN_NONE;
}

/* truncations() -> (log record values, span values) cut by the limits so far */
static PyObject *truncations(PyObject *self, PyObject *unused) {
    return Py_BuildValue("(KK)", TRUNCATED[0], TRUNCATED[1]);
}

static PyMethodDef methods[] = {
    {"set_limits", set_limits, METH_VARARGS,
     "set_limits(logs, spans, free_text, free_keys, free_prefixes): attribute value length limits."},
    {"truncations", truncations, METH_NOARGS,
     "truncations() -> (log record values, span values) truncated so far."},
    {"encode_attrs", encode_attrs, METH_VARARGS,
     "encode_attrs(tag, attrs[, cached_keys]) -> bytes: OTLP KeyValue fields under `tag`."},
    {"encode_log", (PyCFunction)(void (*)(void))encode_log, METH_FASTCALL | METH_KEYWORDS,
     "encode_log(time_ns, observed_ns, severity, body, attrs, trace_id=None, span_id=None, "
     "event_name=None, severity_text=None) -> bytes: a LogRecord."},
    {"encode_span", (PyCFunction)(void (*)(void))encode_span, METH_FASTCALL | METH_KEYWORDS,
     "encode_span(trace_id, span_id, parent_id, name, kind, start_ns, end_ns, attrs, status=0, "
     "status_message=None, events=None) -> bytes: a Span."},
    {"request", request, METH_O, "request(groups) -> bytes: an export request."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_wire", NULL, -1, methods};

PyMODINIT_FUNC PyInit__wire(void) {
    const uint16_t one = 1;
    if (*(const unsigned char *)&one != 1) {  /* doubles and fixed64 are copied as-is: little-endian only */
        PyErr_SetString(PyExc_ImportError, "_wire needs a little-endian host");
        return NULL;
    }
    return PyModule_Create(&module);
}
