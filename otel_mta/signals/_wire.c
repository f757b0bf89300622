/*
 * C twin of wire.encode_attrs: OTLP KeyValue attributes straight from a dict to
 * protobuf wire bytes. Encoding attributes in Python (wire.Attributes) is the
 * largest cost per mail event — ~4.5 us for a delivery's ~20 attributes, done
 * for its log record and its span; this takes ~1 us (bench/otlp_encode.py).
 * tests/test_wire.py checks both produce the same bytes and that the official
 * protobuf classes parse them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define MAX_DEPTH 8

typedef struct {
    char *p;
    Py_ssize_t len, cap;
} buf;

static int grow(buf *b, Py_ssize_t need) {
    if (b->len + need <= b->cap) return 0;
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + need) cap *= 2;
    char *p = PyMem_Realloc(b->p, cap);
    if (!p) { PyErr_NoMemory(); return -1; }
    b->p = p; b->cap = cap;
    return 0;
}

static int put(buf *b, const void *src, Py_ssize_t n) {
    if (grow(b, n) < 0) return -1;
    memcpy(b->p + b->len, src, n);
    b->len += n;
    return 0;
}

static int put_byte(buf *b, unsigned char c) { return put(b, &c, 1); }

static int put_varint(buf *b, uint64_t v) {
    unsigned char tmp[10];
    int n = 0;
    while (v > 0x7f) { tmp[n++] = (unsigned char)((v & 0x7f) | 0x80); v >>= 7; }
    tmp[n++] = (unsigned char)v;
    return put(b, tmp, n);
}

/* tag, length, payload */
static int put_ld(buf *b, unsigned char tag, const char *data, Py_ssize_t n) {
    if (put_byte(b, tag) < 0 || put_varint(b, (uint64_t)n) < 0) return -1;
    return put(b, data, n);
}

static int any_value(buf *out, PyObject *v, int depth);
static int key_value(buf *out, PyObject *k, PyObject *v, int depth);

static int str_value(buf *out, unsigned char tag, PyObject *s) {
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(s, &n);
    if (!u) {  /* lone surrogates: encode with replacement, as Python's side does */
        PyErr_Clear();
        PyObject *bytes = PyUnicode_AsEncodedString(s, "utf-8", "replace");
        if (!bytes) return -1;
        int rc = put_ld(out, tag, PyBytes_AS_STRING(bytes), PyBytes_GET_SIZE(bytes));
        Py_DECREF(bytes);
        return rc;
    }
    return put_ld(out, tag, u, n);
}

/* An AnyValue message body for v */
static int any_value(buf *out, PyObject *v, int depth) {
    if (depth > MAX_DEPTH) {
        PyErr_SetString(PyExc_ValueError, "attribute value nested too deeply");
        return -1;
    }
    if (PyUnicode_CheckExact(v)) return str_value(out, 0x0a, v);
    if (PyBool_Check(v)) return put_byte(out, 0x10) < 0 ? -1 : put_byte(out, v == Py_True);
    if (PyLong_Check(v)) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow) {  /* beyond int64: keep the digits as text */
            PyObject *s = PyObject_Str(v);
            if (!s) return -1;
            int rc = str_value(out, 0x0a, s);
            Py_DECREF(s);
            return rc;
        }
        if (x == -1 && PyErr_Occurred()) return -1;
        return put_byte(out, 0x18) < 0 ? -1 : put_varint(out, (uint64_t)x);
    }
    if (PyFloat_Check(v)) {
        double d = PyFloat_AS_DOUBLE(v);
        unsigned char tmp[9];
        tmp[0] = 0x21;
        memcpy(tmp + 1, &d, 8);  /* little-endian hosts only: checked at import */
        return put(out, tmp, 9);
    }
    if (PyList_Check(v) || PyTuple_Check(v) || PyDict_Check(v)) {
        buf inner = {0};
        int rc = 0;
        if (PyDict_Check(v)) {
            PyObject *k, *item;
            Py_ssize_t pos = 0;
            while (rc == 0 && PyDict_Next(v, &pos, &k, &item)) {
                buf kv = {0};
                PyObject *ks = PyUnicode_Check(k) ? (Py_INCREF(k), k) : PyObject_Str(k);
                rc = ks ? key_value(&kv, ks, item, depth + 1) : -1;
                Py_XDECREF(ks);
                if (rc == 0) rc = put_ld(&inner, 0x0a, kv.p, kv.len);
                PyMem_Free(kv.p);
            }
            if (rc == 0) rc = put_ld(out, 0x32, inner.p, inner.len);
        } else {
            PyObject *seq = PySequence_Fast(v, "");
            if (!seq) return -1;
            Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
            for (Py_ssize_t i = 0; rc == 0 && i < n; i++) {
                buf av = {0};
                rc = any_value(&av, PySequence_Fast_GET_ITEM(seq, i), depth + 1);
                if (rc == 0) rc = put_ld(&inner, 0x0a, av.p, av.len);
                PyMem_Free(av.p);
            }
            Py_DECREF(seq);
            if (rc == 0) rc = put_ld(out, 0x2a, inner.p, inner.len);
        }
        PyMem_Free(inner.p);
        return rc;
    }
    if (PyBytes_Check(v)) return put_ld(out, 0x3a, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v));
    PyObject *s = PyObject_Str(v);
    if (!s) return -1;
    int rc = str_value(out, 0x0a, s);
    Py_DECREF(s);
    return rc;
}

/* A KeyValue message body */
static int key_value(buf *out, PyObject *k, PyObject *v, int depth) {
    if (str_value(out, 0x0a, k) < 0) return -1;
    buf av = {0};
    int rc = any_value(&av, v, depth);
    if (rc == 0) rc = put_ld(out, 0x12, av.p, av.len);
    PyMem_Free(av.p);
    return rc;
}

/* encode_attrs(tag, attrs[, cached_keys]) -> bytes: every non-None pair as field `tag` */
static PyObject *encode_attrs(PyObject *self, PyObject *args) {
    int tag;
    PyObject *attrs, *ignored = NULL;
    if (!PyArg_ParseTuple(args, "iO!|O", &tag, &PyDict_Type, &attrs, &ignored)) return NULL;
    if (tag < 0 || tag > 0x7f) {
        PyErr_SetString(PyExc_ValueError, "tag must be a one-byte field tag");
        return NULL;
    }
    buf out = {0}, kv = {0};
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(attrs, &pos, &k, &v)) {
        if (v == Py_None) continue;
        if (!PyUnicode_Check(k)) {
            PyErr_SetString(PyExc_TypeError, "attribute keys must be str");
            goto error;
        }
        kv.len = 0;
        if (key_value(&kv, k, v, 0) < 0) goto error;
        if (put_ld(&out, (unsigned char)tag, kv.p, kv.len) < 0) goto error;
    }
    PyObject *result = PyBytes_FromStringAndSize(out.p ? out.p : "", out.len);
    PyMem_Free(out.p);
    PyMem_Free(kv.p);
    return result;
error:
    PyMem_Free(out.p);
    PyMem_Free(kv.p);
    return NULL;
}

static PyMethodDef methods[] = {
    {"encode_attrs", encode_attrs, METH_VARARGS,
     "encode_attrs(tag, attrs[, cached_keys]) -> bytes: OTLP KeyValue fields under `tag`."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_wire", NULL, -1, methods};

PyMODINIT_FUNC PyInit__wire(void) {
    const uint16_t one = 1;
    if (*(const unsigned char *)&one != 1) {  /* doubles are copied as-is: little-endian only */
        PyErr_SetString(PyExc_ImportError, "_wire needs a little-endian host");
        return NULL;
    }
    return PyModule_Create(&module);
}
