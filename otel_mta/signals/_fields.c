/*
 * The C twin of signals/fields.py: delivery_fields(entry, attrs, action,
 * outcome, ref, red). fields.py stays the reference and explains the mapping;
 * this file does exactly the same, in the same order (attribute order is
 * visible in the output). tests/test_fields.py holds both to that on random
 * entries. In Python this was ~7 us of each delivery entry, the largest share
 * left (bench/remote_log_stages.py).
 *
 * Strings are handled here when they are ASCII, which ZoneMTA's fields
 * practically always are. Other strings go to the Python code that fields.py
 * registers with setup(): privacy.domain_part and fields.smtp_reply. Those
 * follow Python's Unicode rules (whitespace, digits), so the two twins cannot
 * disagree on them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *domain_part_fn, *smtp_reply_fn;  /* from setup() */
static PyObject *empty, *question, *rejected_s, *port25, *policy_s;

/* entry keys */
static PyObject *E_ZONE, *E_MX, *E_IP, *E_HOST, *E_CATEGORY, *E_RESPONSE, *E_PROTOCOL, *E_TO, *E_FROM,
    *E_RETURN_PATH, *E_SIZE, *E_TLS_VERSION, *E_TLS_CIPHER, *E_TLS_AUTHORIZED, *E_TLS_AUTH_ERROR, *E_DEFCOUNT,
    *E_TIMER, *E_START;
/* attribute keys */
static PyObject *A_ZONE, *A_OUTCOME, *A_MX, *A_SERVER_ADDRESS, *A_PEER, *A_SENDING_IP, *A_CATEGORY, *A_RESPONSE,
    *A_CODE, *A_STATUS, *A_SIZE, *A_PROTOCOL, *A_TLS_VERSION, *A_TLS_CIPHER, *A_TLS_AUTHORIZED, *A_TLS_AUTH_ERROR,
    *A_DEFER_COUNT, *A_SERVER_PORT, *A_LOCAL_ADDRESS, *A_PROTOCOL_NAME, *A_ERROR_TYPE, *A_DURATION_MS;
/* <prefix>.domain, .address, .hash */
static PyObject *A_RCPT[3], *A_SENDER[3], *A_RETURN_PATH[3];

/* privacy modes, as in Redactor.policy */
enum { DROP = 0, DOMAIN = 1, HMAC = 2, FULL = 3 };

static int intern_all(void) {
#define S(var, text) if (!(var = PyUnicode_InternFromString(text))) return -1;
    S(empty, "") S(question, "?") S(rejected_s, "rejected") S(policy_s, "policy")
    S(E_ZONE, "zone") S(E_MX, "mx") S(E_IP, "ip") S(E_HOST, "host") S(E_CATEGORY, "category")
    S(E_RESPONSE, "response") S(E_PROTOCOL, "protocol") S(E_TO, "to") S(E_FROM, "from")
    S(E_RETURN_PATH, "returnPath") S(E_SIZE, "size") S(E_TLS_VERSION, "tlsVersion") S(E_TLS_CIPHER, "tlsCipher")
    S(E_TLS_AUTHORIZED, "tlsAuthorized") S(E_TLS_AUTH_ERROR, "tlsAuthorizationError") S(E_DEFCOUNT, "defcount")
    S(E_TIMER, "timer") S(E_START, "start")
    S(A_ZONE, "mta.zone") S(A_OUTCOME, "mta.delivery.outcome") S(A_MX, "mta.mx.host")
    S(A_SERVER_ADDRESS, "server.address") S(A_PEER, "network.peer.address") S(A_SENDING_IP, "mta.sending_ip")
    S(A_CATEGORY, "mta.bounce.category") S(A_RESPONSE, "mta.smtp.response") S(A_CODE, "mta.smtp.code")
    S(A_STATUS, "mta.smtp.enhanced_status") S(A_SIZE, "mta.message.size") S(A_PROTOCOL, "mta.protocol")
    S(A_TLS_VERSION, "mta.tls.version") S(A_TLS_CIPHER, "mta.tls.cipher") S(A_TLS_AUTHORIZED, "mta.tls.authorized")
    S(A_TLS_AUTH_ERROR, "mta.tls.authorization_error") S(A_DEFER_COUNT, "mta.defer.count")
    S(A_SERVER_PORT, "server.port") S(A_LOCAL_ADDRESS, "network.local.address")
    S(A_PROTOCOL_NAME, "network.protocol.name") S(A_ERROR_TYPE, "error.type")
    S(A_DURATION_MS, "mta.delivery.duration_ms")
    S(A_RCPT[0], "mta.recipient.domain") S(A_RCPT[1], "mta.recipient.address") S(A_RCPT[2], "mta.recipient.hash")
    S(A_SENDER[0], "mta.sender.domain") S(A_SENDER[1], "mta.sender.address") S(A_SENDER[2], "mta.sender.hash")
    S(A_RETURN_PATH[0], "mta.return_path.domain") S(A_RETURN_PATH[1], "mta.return_path.address")
    S(A_RETURN_PATH[2], "mta.return_path.hash")
#undef S
    if (!(port25 = PyLong_FromLong(25))) return -1;
    return 0;
}

/* entry.get(key): a borrowed reference, Py_None when missing; NULL on error */
static PyObject *get(PyObject *entry, PyObject *key) {
    PyObject *v = PyDict_GetItemWithError(entry, key);
    if (v) return v;
    return PyErr_Occurred() ? NULL : Py_None;
}

/* `value or None`, borrowed; NULL on error */
static PyObject *or_none(PyObject *v) {
    int t = PyObject_IsTrue(v);
    if (t < 0) return NULL;
    return t ? v : Py_None;
}

/* fields.py's num(): ints and floats (not bools), else None; borrowed */
static PyObject *num(PyObject *v) {
    return (PyLong_CheckExact(v) || PyFloat_CheckExact(v)) ? v : Py_None;
}

/* int(v) of an int or float (raises on inf and nan, like Python); new reference */
static PyObject *to_int(PyObject *v) {
    if (PyLong_CheckExact(v)) { Py_INCREF(v); return v; }
    return PyNumber_Long(v);
}

static int set(PyObject *d, PyObject *k, PyObject *v) { return PyDict_SetItem(d, k, v); }

/* set and release a new reference (NULL: an error already raised) */
static int set_new(PyObject *d, PyObject *k, PyObject *v) {
    if (!v) return -1;
    int rc = PyDict_SetItem(d, k, v);
    Py_DECREF(v);
    return rc;
}

/* str.isspace() and re's \s, on ASCII */
static int ascii_space(unsigned char c) { return c == ' ' || (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x1f); }
static int ascii_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int ascii_word(unsigned char c) {
    return ascii_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

/* privacy.domain_part(part): part.strip().rstrip(">").strip().lower() or None; new reference */
static PyObject *domain_part(PyObject *part) {
    if (!PyUnicode_IS_ASCII(part)) return PyObject_CallOneArg(domain_part_fn, part);
    const unsigned char *s = PyUnicode_1BYTE_DATA(part);
    Py_ssize_t a = 0, b = PyUnicode_GET_LENGTH(part);
    while (a < b && ascii_space(s[a])) a++;
    while (b > a && ascii_space(s[b - 1])) b--;
    while (b > a && s[b - 1] == '>') b--;
    while (b > a && ascii_space(s[b - 1])) b--;
    if (a == b) Py_RETURN_NONE;
    PyObject *out = PyUnicode_New(b - a, 127);
    if (!out) return NULL;
    unsigned char *o = PyUnicode_1BYTE_DATA(out);
    for (Py_ssize_t i = a; i < b; i++) {
        unsigned char c = s[i];
        o[i - a] = (c >= 'A' && c <= 'Z') ? c + 32 : c;
    }
    return out;
}

/* Redactor.address(): <prefix>.domain and, by mode, .address or .hash */
static int address(PyObject *attrs, PyObject *const keys[3], PyObject *value, long mode, PyObject *hash_fn) {
    if (mode == DROP || !PyUnicode_CheckExact(value)) return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(value);
    if (n == 0) return 0;
    Py_ssize_t at = PyUnicode_FindChar(value, '@', 0, n, -1);
    if (at == -2) return -1;
    PyObject *dom;
    if (at >= 0) {
        PyObject *part = PyUnicode_Substring(value, at + 1, n);
        if (!part) return -1;
        dom = domain_part(part);
        Py_DECREF(part);
        if (!dom) return -1;
    } else {
        dom = Py_NewRef(Py_None);
    }
    if (set_new(attrs, keys[0], dom) < 0) return -1;
    if (mode == FULL) return set(attrs, keys[1], value);
    if (mode == HMAC) return set_new(attrs, keys[2], PyObject_CallOneArg(hash_fn, value));
    return 0;
}

/* fields.smtp_reply(): (code, status or None) or None; new reference */
static PyObject *smtp_reply(PyObject *response) {
    if (!PyUnicode_IS_ASCII(response)) return PyObject_CallOneArg(smtp_reply_fn, response);
    const unsigned char *s = PyUnicode_1BYTE_DATA(response);
    Py_ssize_t n = PyUnicode_GET_LENGTH(response), i = 0;
    while (i < n && ascii_space(s[i])) i++;
    if (i + 3 > n || !ascii_digit(s[i]) || !ascii_digit(s[i + 1]) || !ascii_digit(s[i + 2])) Py_RETURN_NONE;
    long code = (s[i] - '0') * 100 + (s[i + 1] - '0') * 10 + (s[i + 2] - '0');
    PyObject *status = NULL;
    /* (?:[ -]+(\d\.\d{1,3}\.\d{1,3})\b)? — each digit run must be whole and 1-3 long */
    Py_ssize_t k = i + 3;
    while (k < n && (s[k] == ' ' || s[k] == '-')) k++;
    if (k > i + 3 && k + 1 < n && ascii_digit(s[k]) && s[k + 1] == '.') {
        Py_ssize_t m = k + 2, r1 = 0, r2 = 0;
        while (m + r1 < n && ascii_digit(s[m + r1])) r1++;
        if (r1 >= 1 && r1 <= 3 && m + r1 < n && s[m + r1] == '.') {
            Py_ssize_t m2 = m + r1 + 1;
            while (m2 + r2 < n && ascii_digit(s[m2 + r2])) r2++;
            if (r2 >= 1 && r2 <= 3 && (m2 + r2 == n || !ascii_word(s[m2 + r2]))) {
                status = PyUnicode_Substring(response, k, m2 + r2);
                if (!status) return NULL;
            }
        }
    }
    PyObject *code_o = PyLong_FromLong(code);
    if (!code_o) { Py_XDECREF(status); return NULL; }
    return Py_BuildValue("(NN)", code_o, status ? status : Py_NewRef(Py_None));
}

/* a list of str parts, each f"{value}" */
static int add_part(PyObject *parts, PyObject *v) {
    PyObject *s = PyObject_Format(v, empty);
    if (!s) return -1;
    int rc = PyList_Append(parts, s);
    Py_DECREF(s);
    return rc;
}

static int add_text(PyObject *parts, const char *text) {
    PyObject *s = PyUnicode_FromString(text);
    if (!s) return -1;
    int rc = PyList_Append(parts, s);
    Py_DECREF(s);
    return rc;
}

static PyObject *delivery_fields(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "delivery_fields(entry, attrs, action, outcome, ref, red)");
        return NULL;
    }
    PyObject *entry = args[0], *attrs = args[1], *action = args[2], *outcome = args[3], *ref = args[4];
    if (!PyDict_Check(entry) || !PyDict_Check(attrs) || !PyUnicode_Check(action)) {
        PyErr_SetString(PyExc_TypeError, "delivery_fields: entry and attrs must be dicts, action a str");
        return NULL;
    }
    /* Redactor.policy: (recipient mode, sender mode, mask text, text(), hash()) */
    PyObject *policy = PyObject_GetAttr(args[5], policy_s);
    if (!policy) return NULL;
    if (!PyTuple_Check(policy) || PyTuple_GET_SIZE(policy) != 5) {
        Py_DECREF(policy);
        PyErr_SetString(PyExc_TypeError, "delivery_fields: red.policy must be a 5-tuple");
        return NULL;
    }
    long rcpt_mode = PyLong_AsLong(PyTuple_GET_ITEM(policy, 0));
    long sender_mode = PyLong_AsLong(PyTuple_GET_ITEM(policy, 1));
    int mask = PyObject_IsTrue(PyTuple_GET_ITEM(policy, 2));
    PyObject *text_fn = PyTuple_GET_ITEM(policy, 3), *hash_fn = PyTuple_GET_ITEM(policy, 4);
    if (PyErr_Occurred() || mask < 0) { Py_DECREF(policy); return NULL; }

    PyObject *response = NULL, *reply = NULL, *size = NULL, *defcount = NULL, *extra = NULL, *log_only = NULL;
    PyObject *parts = NULL, *body = NULL, *dom = NULL, *result = NULL, *timer_int = NULL;
    PyObject *zone, *mx, *ip, *peer, *category, *protocol, *v, *timer, *first_byte;
    int deferred = PyUnicode_CompareWithASCIIString(action, "DEFERRED") == 0;
    int rejected = PyUnicode_CompareWithASCIIString(action, "REJECTED") == 0;

#define GET(var, key) if (!(var = get(entry, key))) goto done;
#define GET_OR_NONE(var, key) GET(var, key) if (!(var = or_none(var))) goto done;
    GET(zone, E_ZONE)
    GET_OR_NONE(mx, E_MX)
    GET_OR_NONE(ip, E_IP)
    GET_OR_NONE(peer, E_HOST)
    GET_OR_NONE(category, E_CATEGORY)
    GET(v, E_RESPONSE)
    /* red.text(): addresses in free text are masked (regex, in Python) */
    if (mask && PyUnicode_CheckExact(v) &&
        PyUnicode_FindChar(v, '@', 0, PyUnicode_GET_LENGTH(v), 1) >= 0) {
        if (!(response = PyObject_CallOneArg(text_fn, v))) goto done;
    } else {
        response = Py_NewRef(v);
    }
    if (!(v = or_none(response))) goto done;
    Py_SETREF(response, Py_NewRef(v));
    GET(protocol, E_PROTOCOL)
    if (set(attrs, A_ZONE, zone) < 0 || set(attrs, A_OUTCOME, outcome) < 0) goto done;
    GET(v, E_TO)
    if (address(attrs, A_RCPT, v, rcpt_mode, hash_fn) < 0) goto done;
    GET(v, E_FROM)
    if (address(attrs, A_SENDER, v, sender_mode, hash_fn) < 0) goto done;
    GET(v, E_RETURN_PATH)
    if (address(attrs, A_RETURN_PATH, v, sender_mode, hash_fn) < 0) goto done;
    if (set(attrs, A_MX, mx) < 0 || set(attrs, A_SERVER_ADDRESS, mx) < 0 || set(attrs, A_PEER, peer) < 0 ||
        set(attrs, A_SENDING_IP, ip) < 0 || set(attrs, A_CATEGORY, category) < 0 ||
        set(attrs, A_RESPONSE, response) < 0)
        goto done;
    if (PyUnicode_CheckExact(response)) {
        if (!(reply = smtp_reply(response))) goto done;
        if (reply != Py_None) {
            if (!PyTuple_Check(reply) || PyTuple_GET_SIZE(reply) != 2) {
                PyErr_SetString(PyExc_TypeError, "smtp_reply() must return a pair or None");
                goto done;
            }
            if (set(attrs, A_CODE, PyTuple_GET_ITEM(reply, 0)) < 0 ||
                set(attrs, A_STATUS, PyTuple_GET_ITEM(reply, 1)) < 0)
                goto done;
        }
    }
    GET(v, E_SIZE)
    v = num(v);
    if (v == Py_None) size = Py_NewRef(Py_None);
    else if (!(size = to_int(v))) goto done;
    if (set(attrs, A_SIZE, size) < 0 || set(attrs, A_PROTOCOL, protocol) < 0) goto done;
    GET(v, E_TLS_VERSION)
    int tls = PyObject_IsTrue(v);
    if (tls < 0) goto done;
    if (tls) {
        if (set(attrs, A_TLS_VERSION, v) < 0) goto done;
        GET_OR_NONE(v, E_TLS_CIPHER)
        if (set(attrs, A_TLS_CIPHER, v) < 0) goto done;
        GET(v, E_TLS_AUTHORIZED)
        if (set(attrs, A_TLS_AUTHORIZED, v == Py_True ? Py_True : Py_False) < 0) goto done;
        GET_OR_NONE(v, E_TLS_AUTH_ERROR)
        if (set(attrs, A_TLS_AUTH_ERROR, v) < 0) goto done;
    }
    if (deferred) {
        GET(v, E_DEFCOUNT)
        v = num(v);
        if (v == Py_None) defcount = PyLong_FromLong(0);
        else defcount = to_int(v);
        if (!defcount || set(attrs, A_DEFER_COUNT, defcount) < 0) goto done;
    } else if (!(defcount = PyLong_FromLong(0))) {
        goto done;
    }
    GET(timer, E_TIMER)
    timer = num(timer);
    GET(first_byte, E_START)
    first_byte = num(first_byte);
    if (timer != Py_None && !(timer_int = to_int(timer))) goto done;

    if (!(extra = PyDict_New()) || set(extra, A_SERVER_PORT, mx != Py_None ? port25 : Py_None) < 0 ||
        set(extra, A_LOCAL_ADDRESS, ip) < 0 || set(extra, A_PROTOCOL_NAME, protocol) < 0 ||
        set(extra, A_ERROR_TYPE, rejected ? (category != Py_None ? category : rejected_s) : Py_None) < 0)
        goto done;
    if (!(log_only = PyDict_New()) || set(log_only, A_DURATION_MS, timer_int ? timer_int : Py_None) < 0) goto done;

    /* the log body */
    dom = PyDict_GetItemWithError(attrs, A_RCPT[0]);
    if (!dom && PyErr_Occurred()) goto done;
    dom = dom ? dom : Py_None;
    Py_INCREF(dom);
    int dom_true = PyObject_IsTrue(dom);
    if (dom_true < 0 || !(parts = PyList_New(0))) goto done;
    if (add_part(parts, action) < 0) goto done;
    if (category != Py_None &&
        (add_text(parts, "[") < 0 || add_part(parts, category) < 0 || add_text(parts, "]") < 0))
        goto done;
    if (add_text(parts, " ") < 0 || add_part(parts, ref) < 0 || add_text(parts, " to ") < 0 ||
        add_part(parts, dom_true ? dom : question) < 0)
        goto done;
    if (mx != Py_None) {
        if (add_text(parts, " via ") < 0 || add_part(parts, mx) < 0) goto done;
        if (peer != Py_None && (add_text(parts, "[") < 0 || add_part(parts, peer) < 0 || add_text(parts, "]") < 0))
            goto done;
    }
    if (ip != Py_None && (add_text(parts, " from ") < 0 || add_part(parts, ip) < 0)) goto done;
    if (timer_int && (add_text(parts, " in ") < 0 || add_part(parts, timer_int) < 0 || add_text(parts, " ms") < 0))
        goto done;
    if (deferred && (add_text(parts, " (deferral ") < 0 || add_part(parts, defcount) < 0 || add_text(parts, ")") < 0))
        goto done;
    if (response != Py_None && (add_text(parts, ": ") < 0 || add_part(parts, response) < 0)) goto done;
    if (!(body = PyUnicode_Join(empty, parts))) goto done;
    result = PyTuple_Pack(11, body, extra, log_only, zone, ip, category, dom, response, timer, first_byte, defcount);
#undef GET
#undef GET_OR_NONE
done:
    Py_DECREF(policy);
    Py_XDECREF(response);
    Py_XDECREF(reply);
    Py_XDECREF(size);
    Py_XDECREF(defcount);
    Py_XDECREF(extra);
    Py_XDECREF(log_only);
    Py_XDECREF(parts);
    Py_XDECREF(body);
    Py_XDECREF(dom);
    Py_XDECREF(timer_int);
    return result;
}

static PyObject *setup(PyObject *self, PyObject *args) {
    PyObject *d, *s;
    if (!PyArg_ParseTuple(args, "OO:setup", &d, &s)) return NULL;
    if (!PyCallable_Check(d) || !PyCallable_Check(s)) {
        PyErr_SetString(PyExc_TypeError, "setup(domain_part, smtp_reply) takes two callables");
        return NULL;
    }
    Py_XSETREF(domain_part_fn, Py_NewRef(d));
    Py_XSETREF(smtp_reply_fn, Py_NewRef(s));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"delivery_fields", (PyCFunction)(void (*)(void))delivery_fields, METH_FASTCALL,
     "delivery_fields(entry, attrs, action, outcome, ref, red) -> tuple; see signals/fields.py"},
    {"setup", setup, METH_VARARGS, "setup(domain_part, smtp_reply): the Python fallbacks for non-ASCII text"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fields", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fields(void) {
    if (!empty && intern_all() < 0) return NULL;
    return PyModule_Create(&module);
}
