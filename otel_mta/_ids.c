/*
 * The C twin of ids._digest_py: the first `size` bytes of SHA-256 of a str's
 * UTF-8, never all zero. Every message takes two of these (trace id, root
 * span id) and every delivery attempt one. Through hashlib each cost ~0.8 us,
 * most of it making and freeing an OpenSSL hash object for a 40-byte input;
 * this is a plain SHA-256 (FIPS 180-4) on the stack. tests/test_ids.py checks
 * it against hashlib and the shared test vectors.
 *
 * root_span_id() and attempt_span_id(): the twins of ids.root_span_id_py and
 * ids.attempt_span_id_py, one C call per id instead of a Python function.
 *
 * normalize_message_id(): the twin of ids.normalize_message_id_py for ASCII
 * text (Message-IDs practically always are); other values go to the Python
 * function that ids.py registers with setup(). Every QUEUED entry normalises
 * its Message-ID once, which in Python cost ~1 us.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void block(uint32_t h[8], const unsigned char *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

static void sha256(const unsigned char *data, Py_ssize_t n, unsigned char out[32]) {
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    Py_ssize_t i = 0;
    for (; i + 64 <= n; i += 64) block(h, data + i);
    unsigned char last[128] = {0};
    Py_ssize_t rest = n - i;
    memcpy(last, data + i, (size_t)rest);
    last[rest] = 0x80;
    Py_ssize_t blocks = rest + 9 <= 64 ? 1 : 2;
    uint64_t bits = (uint64_t)n * 8;
    for (int j = 0; j < 8; j++) last[blocks * 64 - 1 - j] = (unsigned char)(bits >> (8 * j));
    block(h, last);
    if (blocks == 2) block(h, last + 64);
    for (int j = 0; j < 8; j++) {
        out[4 * j] = (unsigned char)(h[j] >> 24);
        out[4 * j + 1] = (unsigned char)(h[j] >> 16);
        out[4 * j + 2] = (unsigned char)(h[j] >> 8);
        out[4 * j + 3] = (unsigned char)h[j];
    }
}

/* the bytes of digest(): SHA-256 of text's UTF-8, first `size` bytes, never all zero */
static PyObject *digest_text(PyObject *text, Py_ssize_t size) {
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &n);  /* refuses lone surrogates, as str.encode does */
    if (!utf8) return NULL;
    unsigned char out[32];
    sha256((const unsigned char *)utf8, n, out);
    int zero = 1;
    for (Py_ssize_t i = 0; i < size; i++) zero &= out[i] == 0;
    if (zero) out[size - 1] = 1;  /* all-zero ids are invalid in OTLP */
    return PyBytes_FromStringAndSize((const char *)out, size);
}

static PyObject *digest(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "digest(text: str, size: int)");
        return NULL;
    }
    Py_ssize_t size = PyLong_AsSsize_t(args[1]);
    if (size == -1 && PyErr_Occurred()) return NULL;
    if (size < 1 || size > 32) {
        PyErr_SetString(PyExc_ValueError, "digest: size must be 1..32");
        return NULL;
    }
    return digest_text(args[0], size);
}

/* " \t\r\n\f\v": what ids.WS trims */
static int ws(Py_UCS4 c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* queue_id.strip(ids.WS); new reference */
static PyObject *strip_ws(PyObject *s) {
    if (!PyUnicode_Check(s)) {
        PyErr_SetString(PyExc_TypeError, "the queue id must be a str");
        return NULL;
    }
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    Py_ssize_t a = 0, b = PyUnicode_GET_LENGTH(s);
    while (a < b && ws(PyUnicode_READ(kind, data, a))) a++;
    while (b > a && ws(PyUnicode_READ(kind, data, b - 1))) b--;
    return PyUnicode_Substring(s, a, b);
}

/* digest_text(text) of a new reference, released */
static PyObject *digest_new(PyObject *text, Py_ssize_t size) {
    if (!text) return NULL;
    PyObject *out = digest_text(text, size);
    Py_DECREF(text);
    return out;
}

static PyObject *root_span_id(PyObject *self, PyObject *queue_id) {
    PyObject *qid = strip_ws(queue_id);
    if (!qid) return NULL;
    PyObject *text = PyUnicode_FromFormat("root:%U", qid);
    Py_DECREF(qid);
    return digest_new(text, 8);
}

static PyObject *attempt_span_id(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 3 || nargs > 4) {
        PyErr_SetString(PyExc_TypeError, "attempt_span_id(queue_id, seq, action, defcount=0)");
        return NULL;
    }
    PyObject *count = nargs == 4 ? PyNumber_Long(args[3]) : PyLong_FromLong(0);  /* int(defcount) */
    if (!count) return NULL;
    PyObject *qid = strip_ws(args[0]);
    if (!qid) { Py_DECREF(count); return NULL; }
    PyObject *text = PyUnicode_FromFormat("attempt:%U:%S:%S:%S", qid, args[1], args[2], count);
    Py_DECREF(qid);
    Py_DECREF(count);
    return digest_new(text, 8);
}

static PyObject *normalize_py;  /* ids.normalize_message_id_py, from setup() */

static PyObject *normalize_message_id(PyObject *self, PyObject *value) {
    if (!PyUnicode_CheckExact(value) || !PyUnicode_IS_ASCII(value)) {
        if (!normalize_py) {
            PyErr_SetString(PyExc_RuntimeError, "otel_mta._ids.setup() was not called");
            return NULL;
        }
        return PyObject_CallOneArg(normalize_py, value);
    }
    const Py_UCS1 *s = PyUnicode_1BYTE_DATA(value);
    Py_ssize_t a = 0, b = PyUnicode_GET_LENGTH(value);
    while (a < b && ws(s[a])) a++;
    while (b > a && ws(s[b - 1])) b--;
    if (a < b && s[a] == '<') a++;
    if (b > a && s[b - 1] == '>') b--;
    while (a < b && ws(s[a])) a++;
    while (b > a && ws(s[b - 1])) b--;
    if (a == b) Py_RETURN_NONE;
    Py_ssize_t at = b - 1;
    while (at >= a && s[at] != '@') at--;
    PyObject *out = PyUnicode_New(b - a, 127);
    if (!out) return NULL;
    Py_UCS1 *o = PyUnicode_1BYTE_DATA(out);
    memcpy(o, s + a, (size_t)(b - a));
    for (Py_ssize_t i = at >= a ? at + 1 : b; i < b; i++)  /* the domain, ASCII-lowercased */
        if (s[i] >= 'A' && s[i] <= 'Z') o[i - a] = s[i] + 32;
    return out;
}

static PyObject *setup(PyObject *self, PyObject *fn) {
    if (!PyCallable_Check(fn)) {
        PyErr_SetString(PyExc_TypeError, "setup(normalize_message_id_py) takes a callable");
        return NULL;
    }
    Py_XSETREF(normalize_py, Py_NewRef(fn));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"root_span_id", root_span_id, METH_O, "root_span_id(queue_id) -> 8 bytes; see ids.root_span_id_py"},
    {"attempt_span_id", (PyCFunction)(void (*)(void))attempt_span_id, METH_FASTCALL,
     "attempt_span_id(queue_id, seq, action, defcount=0) -> 8 bytes; see ids.attempt_span_id_py"},
    {"normalize_message_id", normalize_message_id, METH_O,
     "normalize_message_id(value) -> str or None; see ids.normalize_message_id_py"},
    {"setup", setup, METH_O, "setup(normalize_message_id_py): the Python twin, for values that are not ASCII str"},
    {"digest", (PyCFunction)(void (*)(void))digest, METH_FASTCALL,
     "digest(text, size) -> the first size bytes of SHA-256(text as UTF-8), never all zero"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_ids", NULL, -1, methods};

PyMODINIT_FUNC PyInit__ids(void) { return PyModule_Create(&module); }
