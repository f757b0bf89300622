/*
 * The C twin of signals/fields.py: delivery_fields(entry, attrs, action,
 * outcome, ref, red) and queued_fields(entry, attrs, action, queue_id, red).
 * fields.py stays the reference and explains the mapping; this file does
 * exactly the same, in the same order (attribute order is visible in the
 * output). tests/test_fields.py holds both to that on random entries. In
 * Python these were ~7 us of each delivery entry and ~5 us of each QUEUED
 * entry, the largest shares left (bench/remote_log_stages.py).
 *
 * Strings are handled here when they are ASCII, which ZoneMTA's fields
 * practically always are. Other strings go to the Python code that fields.py
 * registers with setup(): privacy.domain_part and fields.smtp_reply, and to
 * Redactor.text (the address-masking regex) from the policy. Those follow
 * Python's Unicode rules (whitespace, digits), so the two twins cannot
 * disagree on them. Also here: pick(), the attributes a root span keeps.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *domain_part_fn, *smtp_reply_fn;  /* from setup() */
static PyObject *empty, *question, *rejected_s, *zero, *policy_s;

/* entry keys */
static PyObject *E_ZONE, *E_MX, *E_IP, *E_HOST, *E_CATEGORY, *E_RESPONSE, *E_PROTOCOL, *E_TO, *E_FROM,
    *E_RETURN_PATH, *E_SIZE, *E_TLS_VERSION, *E_TLS_CIPHER, *E_TLS_AUTHORIZED, *E_TLS_AUTH_ERROR, *E_DEFCOUNT,
    *E_TIMER, *E_START, *E_INTERFACE, *E_HEADER_FROM, *E_SUBJECT, *E_USER, *E_AUTH, *E_SRC, *E_ORIGINHOST,
    *E_TRANSHOST, *E_TRANSTYPE, *E_BODY, *E_MD5, *E_ERROR;
/* attribute keys */
static PyObject *A_ZONE, *A_OUTCOME, *A_MX, *A_SERVER_ADDRESS, *A_PEER, *A_SENDING_IP, *A_CATEGORY, *A_RESPONSE,
    *A_CODE, *A_STATUS, *A_SIZE, *A_PROTOCOL, *A_TLS_VERSION, *A_TLS_CIPHER, *A_TLS_AUTHORIZED, *A_TLS_AUTH_ERROR,
    *A_DEFER_COUNT, *A_LOCAL_ADDRESS, *A_PROTOCOL_NAME, *A_ERROR_TYPE, *A_DURATION_MS,
    *A_INTERFACE, *A_RCPT_COUNT, *A_TRANSPORT, *A_MD5, *A_ERROR;
/* <prefix>.domain, .address, .hash */
static PyObject *A_RCPT[3], *A_SENDER[3], *A_RETURN_PATH[3], *A_HEADER_FROM[3];
/* a personal value and its <key>_hash */
static PyObject *A_SUBJECT[2], *A_USER[2], *A_CLIENT_ADDRESS[2], *A_CLIENT_HOST[2], *A_CLIENT_HELO[2];
static PyObject *comma, *comma_space, *strip_s, *not_queued;

/* privacy modes, as in Redactor.policy */
enum { DROP = 0, DOMAIN = 1, HMAC = 2, FULL = 3 };

static int intern_all(void) {
#define S(var, text) if (!(var = PyUnicode_InternFromString(text))) return -1;
    S(empty, "") S(question, "?") S(rejected_s, "rejected") S(policy_s, "policy")
    S(E_ZONE, "zone") S(E_MX, "mx") S(E_IP, "ip") S(E_HOST, "host") S(E_CATEGORY, "category")
    S(E_RESPONSE, "response") S(E_PROTOCOL, "protocol") S(E_TO, "to") S(E_FROM, "from")
    S(E_RETURN_PATH, "returnPath") S(E_SIZE, "size") S(E_TLS_VERSION, "tlsVersion") S(E_TLS_CIPHER, "tlsCipher")
    S(E_TLS_AUTHORIZED, "tlsAuthorized") S(E_TLS_AUTH_ERROR, "tlsAuthorizationError") S(E_DEFCOUNT, "defcount")
    S(E_TIMER, "timer") S(E_START, "start") S(E_INTERFACE, "interface") S(E_HEADER_FROM, "headerFrom")
    S(E_SUBJECT, "subject") S(E_USER, "user") S(E_AUTH, "auth") S(E_SRC, "src") S(E_ORIGINHOST, "originhost")
    S(E_TRANSHOST, "transhost") S(E_TRANSTYPE, "transtype") S(E_BODY, "body") S(E_MD5, "md5") S(E_ERROR, "error")
    S(A_INTERFACE, "mta.interface") S(A_RCPT_COUNT, "mta.recipient.count") S(A_TRANSPORT, "mta.transport")
    S(A_MD5, "mta.message.md5") S(A_ERROR, "mta.error")
    S(A_HEADER_FROM[0], "mta.header_from.domain") S(A_HEADER_FROM[1], "mta.header_from.address")
    S(A_HEADER_FROM[2], "mta.header_from.hash")
    S(A_SUBJECT[0], "mta.subject") S(A_SUBJECT[1], "mta.subject_hash") S(A_USER[0], "mta.user")
    S(A_USER[1], "mta.user_hash") S(A_CLIENT_ADDRESS[0], "mta.client.address")
    S(A_CLIENT_ADDRESS[1], "mta.client.address_hash") S(A_CLIENT_HOST[0], "mta.client.host")
    S(A_CLIENT_HOST[1], "mta.client.host_hash") S(A_CLIENT_HELO[0], "mta.client.helo")
    S(A_CLIENT_HELO[1], "mta.client.helo_hash")
    S(comma, ",") S(comma_space, ", ") S(strip_s, "strip") S(not_queued, "not queued")
    S(A_ZONE, "mta.zone") S(A_OUTCOME, "mta.delivery.outcome") S(A_MX, "mta.mx.host")
    S(A_SERVER_ADDRESS, "server.address") S(A_PEER, "network.peer.address") S(A_SENDING_IP, "mta.sending_ip")
    S(A_CATEGORY, "mta.bounce.category") S(A_RESPONSE, "mta.smtp.response") S(A_CODE, "mta.smtp.code")
    S(A_STATUS, "mta.smtp.enhanced_status") S(A_SIZE, "mta.message.size") S(A_PROTOCOL, "mta.protocol")
    S(A_TLS_VERSION, "mta.tls.version") S(A_TLS_CIPHER, "mta.tls.cipher") S(A_TLS_AUTHORIZED, "mta.tls.authorized")
    S(A_TLS_AUTH_ERROR, "mta.tls.authorization_error") S(A_DEFER_COUNT, "mta.defer.count")
    S(A_LOCAL_ADDRESS, "network.local.address")
    S(A_PROTOCOL_NAME, "network.protocol.name") S(A_ERROR_TYPE, "error.type")
    S(A_DURATION_MS, "mta.delivery.duration_ms")
    S(A_RCPT[0], "mta.recipient.domain") S(A_RCPT[1], "mta.recipient.address") S(A_RCPT[2], "mta.recipient.hash")
    S(A_SENDER[0], "mta.sender.domain") S(A_SENDER[1], "mta.sender.address") S(A_SENDER[2], "mta.sender.hash")
    S(A_RETURN_PATH[0], "mta.return_path.domain") S(A_RETURN_PATH[1], "mta.return_path.address")
    S(A_RETURN_PATH[2], "mta.return_path.hash")
#undef S
    if (!(zero = PyLong_FromLong(0))) return -1;
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

/* `int(v) if num(v) is not None else otherwise`; new reference */
static PyObject *int_of(PyObject *v, PyObject *otherwise) {
    v = num(v);
    return v == Py_None ? Py_NewRef(otherwise) : to_int(v);
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

/* Redactor.policy: (recipient, sender, mask text, text(), hash(), subject, user, client) */
typedef struct {
    PyObject *tuple; /* owned; the functions below are borrowed from it */
    long recipient, sender, subject, user, client;
    int mask;
    PyObject *text_fn, *hash_fn;
} policy_t;

static int read_policy(PyObject *red, policy_t *p, const char *caller) {
    PyObject *t = p->tuple = PyObject_GetAttr(red, policy_s);
    if (!t) return -1;
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 8) {
        PyErr_Format(PyExc_TypeError, "%s: red.policy must be an 8-tuple", caller);
        Py_CLEAR(p->tuple);
        return -1;
    }
    p->recipient = PyLong_AsLong(PyTuple_GET_ITEM(t, 0));
    p->sender = PyLong_AsLong(PyTuple_GET_ITEM(t, 1));
    p->mask = PyObject_IsTrue(PyTuple_GET_ITEM(t, 2));
    p->text_fn = PyTuple_GET_ITEM(t, 3);
    p->hash_fn = PyTuple_GET_ITEM(t, 4);
    p->subject = PyLong_AsLong(PyTuple_GET_ITEM(t, 5));
    p->user = PyLong_AsLong(PyTuple_GET_ITEM(t, 6));
    p->client = PyLong_AsLong(PyTuple_GET_ITEM(t, 7));
    if (PyErr_Occurred() || p->mask < 0) {
        Py_CLEAR(p->tuple);
        return -1;
    }
    return 0;
}

/* privacy.ADDRESS_IN_TEXT on ASCII text: [^\s<>"'(),;:\[\]]+@([A-Za-z0-9.-]+\.[A-Za-z]{2,63}) */
static int local_char(unsigned char c) {
    return !(ascii_space(c) || c == '<' || c == '>' || c == '"' || c == '\'' || c == '(' || c == ')' || c == ',' ||
             c == ';' || c == ':' || c == '[' || c == ']');
}
static int ascii_alpha(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int domain_char(unsigned char c) { return ascii_alpha(c) || ascii_digit(c) || c == '.' || c == '-'; }

/* Where the domain group matched from d ends, or -1: the regex's backtracking,
 * which takes the last '.' of the run that 2 to 63 letters follow, and as many
 * of those letters as it can. */
static Py_ssize_t domain_end(const unsigned char *s, Py_ssize_t n, Py_ssize_t d) {
    Py_ssize_t e = d;
    while (e < n && domain_char(s[e])) e++;
    for (Py_ssize_t m = e - 1; m > d; m--) {
        if (s[m] != '.') continue;
        Py_ssize_t c = 0;
        while (m + 1 + c < n && c < 63 && ascii_alpha(s[m + 1 + c])) c++;
        if (c >= 2) return m + 1 + c;
    }
    return -1;
}

/* ADDRESS_IN_TEXT.sub(r"***@\1", text) for ASCII text; new reference. A match
 * starts where a run of local-part characters starts, at its last '@' that a
 * domain follows (the local part is greedy and may hold '@'); a run with none
 * cannot match from any later start either, so the scan skips it whole. */
static PyObject *mask_ascii(PyObject *text) {
    const unsigned char *s = PyUnicode_1BYTE_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text), i = 0, o = 0;
    unsigned char *out = PyMem_Malloc((size_t)(2 * n + 4));  /* "a@" becomes "***@": at most twice as long */
    if (!out) return PyErr_NoMemory();
    int changed = 0;
    while (i < n) {
        if (!local_char(s[i])) {
            out[o++] = s[i++];
            continue;
        }
        Py_ssize_t j = i, k, end = -1;
        while (j < n && local_char(s[j])) j++;
        for (k = j - 1; k > i; k--)
            if (s[k] == '@' && (end = domain_end(s, n, k + 1)) >= 0) break;
        if (end < 0) {
            memcpy(out + o, s + i, (size_t)(j - i));
            o += j - i;
            i = j;
            continue;
        }
        memcpy(out + o, "***@", 4);
        memcpy(out + o + 4, s + k + 1, (size_t)(end - k - 1));
        o += 4 + end - k - 1;
        i = end;
        changed = 1;
    }
    PyObject *result = changed ? PyUnicode_FromStringAndSize((const char *)out, o) : Py_NewRef(text);
    PyMem_Free(out);
    return result;
}

/* Redactor.text(v): addresses in free text masked; ASCII here, other text by the regex in Python;
 * new reference */
static PyObject *masked_text(PyObject *v, const policy_t *p) {
    if (p->mask && PyUnicode_CheckExact(v)) {
        Py_ssize_t at = PyUnicode_FindChar(v, '@', 0, PyUnicode_GET_LENGTH(v), 1);
        if (at == -2) return NULL;
        if (at >= 0) return PyUnicode_IS_ASCII(v) ? mask_ascii(v) : PyObject_CallOneArg(p->text_fn, v);
    }
    return Py_NewRef(v);
}

/* mask_addresses(text): mask_ascii() for tests/test_fields.py (ASCII text only) */
static PyObject *mask_addresses(PyObject *self, PyObject *text) {
    if (!PyUnicode_CheckExact(text) || !PyUnicode_IS_ASCII(text)) {
        PyErr_SetString(PyExc_ValueError, "mask_addresses() takes ASCII text");
        return NULL;
    }
    return mask_ascii(text);
}

/* [a.strip() for a in value.split(",") if a.strip()]; new reference */
static PyObject *split_addresses(PyObject *value) {
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    if (PyUnicode_IS_ASCII(value)) {
        const unsigned char *s = PyUnicode_1BYTE_DATA(value);
        Py_ssize_t n = PyUnicode_GET_LENGTH(value), start = 0;
        while (start <= n) {
            Py_ssize_t end = start;
            while (end < n && s[end] != ',') end++;
            Py_ssize_t a = start, b = end;
            while (a < b && ascii_space(s[a])) a++;
            while (b > a && ascii_space(s[b - 1])) b--;
            if (b > a) {
                PyObject *part = PyUnicode_Substring(value, a, b);
                if (!part || PyList_Append(out, part) < 0) { Py_XDECREF(part); Py_DECREF(out); return NULL; }
                Py_DECREF(part);
            }
            start = end + 1;
        }
        return out;
    }
    /* other text: Python's own split and strip (Unicode whitespace) */
    PyObject *parts = PyUnicode_Split(value, comma, -1);
    if (!parts) { Py_DECREF(out); return NULL; }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(parts); i++) {
        PyObject *part = PyObject_CallMethodNoArgs(PyList_GET_ITEM(parts, i), strip_s);
        if (!part || (PyUnicode_GET_LENGTH(part) && PyList_Append(out, part) < 0)) {
            Py_XDECREF(part);
            Py_DECREF(parts);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(part);
    }
    Py_DECREF(parts);
    return out;
}

/* "<>" */
static int is_null_sender(PyObject *value) {
    return PyUnicode_GET_LENGTH(value) == 2 && PyUnicode_READ_CHAR(value, 0) == '<' &&
           PyUnicode_READ_CHAR(value, 1) == '>';
}

/* Redactor.address_list(): <prefix>.count, .domain (one, or a sorted list), and by mode .address / .hash */
static int address_list(PyObject *attrs, PyObject *count_key, PyObject *const keys[3], PyObject *value, long mode,
                        PyObject *hash_fn) {
    if (mode == DROP || !PyUnicode_CheckExact(value) || PyUnicode_GET_LENGTH(value) == 0 || is_null_sender(value))
        return 0;
    int rc = -1;
    PyObject *domains = NULL, *sorted = NULL, *hashes = NULL;
    PyObject *addrs = split_addresses(value);
    if (!addrs || set_new(attrs, count_key, PyLong_FromSsize_t(PyList_GET_SIZE(addrs))) < 0) goto done;
    if (!(domains = PySet_New(NULL))) goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(addrs); i++) {
        PyObject *a = PyList_GET_ITEM(addrs, i);
        Py_ssize_t at = PyUnicode_FindChar(a, '@', 0, PyUnicode_GET_LENGTH(a), -1);
        if (at == -2) goto done;
        if (at < 0) continue;
        PyObject *part = PyUnicode_Substring(a, at + 1, PyUnicode_GET_LENGTH(a));
        if (!part) goto done;
        PyObject *dom = domain_part(part);
        Py_DECREF(part);
        if (!dom) goto done;
        int add = dom != Py_None ? PyObject_IsTrue(dom) : 0;
        if (add < 0 || (add && PySet_Add(domains, dom) < 0)) { Py_DECREF(dom); goto done; }
        Py_DECREF(dom);
    }
    if (PySet_GET_SIZE(domains)) {
        if (!(sorted = PySequence_List(domains)) || PyList_Sort(sorted) < 0) goto done;
        if (set(attrs, keys[0], PyList_GET_SIZE(sorted) == 1 ? PyList_GET_ITEM(sorted, 0) : sorted) < 0) goto done;
    }
    if (mode == FULL) {
        if (set(attrs, keys[1], addrs) < 0) goto done;
    } else if (mode == HMAC) {
        if (!(hashes = PyList_New(PyList_GET_SIZE(addrs)))) goto done;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(addrs); i++) {
            PyObject *h = PyObject_CallOneArg(hash_fn, PyList_GET_ITEM(addrs, i));
            if (!h) goto done;
            PyList_SET_ITEM(hashes, i, h);
        }
        if (set(attrs, keys[2], hashes) < 0) goto done;
    }
    rc = 0;
done:
    Py_XDECREF(addrs);
    Py_XDECREF(domains);
    Py_XDECREF(sorted);
    Py_XDECREF(hashes);
    return rc;
}

/* fields.recipient_count(to); -1 on error */
static Py_ssize_t recipient_count(PyObject *to) {
    if (!PyUnicode_CheckExact(to) || is_null_sender(to)) return 1;
    PyObject *addrs = split_addresses(to);
    if (!addrs) return -1;
    Py_ssize_t n = PyList_GET_SIZE(addrs);
    Py_DECREF(addrs);
    return n;
}

/* Redactor.value(): a personal value as is (full) or as <key>_hash (hmac) */
static int value_attr(PyObject *attrs, PyObject *const keys[2], PyObject *v, long mode, PyObject *hash_fn) {
    if (mode == DROP || v == Py_None || (PyUnicode_Check(v) && PyUnicode_GET_LENGTH(v) == 0)) return 0;
    if (mode != HMAC) return set(attrs, keys[0], v);
    PyObject *text = PyObject_Str(v);
    if (!text) return -1;
    PyObject *h = PyObject_CallOneArg(hash_fn, text);
    Py_DECREF(text);
    return set_new(attrs, keys[1], h);
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
    policy_t pol;
    if (read_policy(args[5], &pol, "delivery_fields") < 0) return NULL;
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
    if (!(response = masked_text(v, &pol)) || !(v = or_none(response))) goto done;
    Py_SETREF(response, Py_NewRef(v));
    GET(protocol, E_PROTOCOL)
    if (set(attrs, A_ZONE, zone) < 0 || set(attrs, A_OUTCOME, outcome) < 0) goto done;
    GET(v, E_TO)
    if (address(attrs, A_RCPT, v, pol.recipient, pol.hash_fn) < 0) goto done;
    GET(v, E_FROM)
    if (address(attrs, A_SENDER, v, pol.sender, pol.hash_fn) < 0) goto done;
    GET(v, E_RETURN_PATH)
    if (address(attrs, A_RETURN_PATH, v, pol.sender, pol.hash_fn) < 0) goto done;
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
    if (!(size = int_of(v, Py_None)) || set(attrs, A_SIZE, size) < 0 || set(attrs, A_PROTOCOL, protocol) < 0) goto done;
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
        if (!(defcount = int_of(v, zero)) || set(attrs, A_DEFER_COUNT, defcount) < 0) goto done;
    } else {
        defcount = Py_NewRef(zero);
    }
    GET(timer, E_TIMER)
    timer = num(timer);
    GET(first_byte, E_START)
    first_byte = num(first_byte);
    if (timer != Py_None && !(timer_int = to_int(timer))) goto done;

    /* no server.port: the remote log does not say which port ZoneMTA connected to (the plugin's phases do) */
    if (!(extra = PyDict_New()) || set(extra, A_LOCAL_ADDRESS, ip) < 0 ||
        set(extra, A_PROTOCOL_NAME, protocol) < 0 || set(extra, A_ERROR_TYPE, rejected ? (category != Py_None ? category : rejected_s) : Py_None) < 0)
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
    Py_DECREF(pol.tuple);
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

static PyObject *queued_fields(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "queued_fields(entry, attrs, action, queue_id, red)");
        return NULL;
    }
    PyObject *entry = args[0], *attrs = args[1], *action = args[2], *qid = args[3];
    if (!PyDict_Check(entry) || !PyDict_Check(attrs) || !PyUnicode_Check(action)) {
        PyErr_SetString(PyExc_TypeError, "queued_fields: entry and attrs must be dicts, action a str");
        return NULL;
    }
    policy_t pol;
    if (read_policy(args[4], &pol, "queued_fields") < 0) return NULL;
    PyObject *size_int = NULL, *error = NULL, *parts = NULL, *body = NULL, *result = NULL, *joined = NULL;
    PyObject *iface, *to, *v, *size;
    int noqueue = PyUnicode_CompareWithASCIIString(action, "NOQUEUE") == 0;

#define GET(var, key) if (!(var = get(entry, key))) goto done;
    GET(iface, E_INTERFACE)
    if (set(attrs, A_INTERFACE, iface) < 0) goto done;
    GET(v, E_FROM)
    if (address(attrs, A_SENDER, v, pol.sender, pol.hash_fn) < 0) goto done;
    GET(v, E_HEADER_FROM)
    if (address(attrs, A_HEADER_FROM, v, pol.sender, pol.hash_fn) < 0) goto done;
    GET(to, E_TO)
    if (address_list(attrs, A_RCPT_COUNT, A_RCPT, to, pol.recipient, pol.hash_fn) < 0) goto done;
    GET(v, E_SUBJECT)
    if (value_attr(attrs, A_SUBJECT, v, pol.subject, pol.hash_fn) < 0) goto done;
    GET(v, E_USER)
    int user = PyObject_IsTrue(v);
    if (user < 0) goto done;
    if (!user) GET(v, E_AUTH)
    if (value_attr(attrs, A_USER, v, pol.user, pol.hash_fn) < 0) goto done;
    GET(v, E_SRC)
    if (value_attr(attrs, A_CLIENT_ADDRESS, v, pol.client, pol.hash_fn) < 0) goto done;
    GET(v, E_ORIGINHOST)
    if (value_attr(attrs, A_CLIENT_HOST, v, pol.client, pol.hash_fn) < 0) goto done;
    GET(v, E_TRANSHOST)
    if (value_attr(attrs, A_CLIENT_HELO, v, pol.client, pol.hash_fn) < 0) goto done;
    GET(v, E_TRANSTYPE)
    if (set(attrs, A_TRANSPORT, v) < 0) goto done;
    GET(size, E_BODY)
    size = num(size);
    if (!(size_int = int_of(size, Py_None)) || set(attrs, A_SIZE, size_int) < 0) goto done;
    GET(v, E_MD5)
    if (set(attrs, A_MD5, v) < 0) goto done;
    if (!(parts = PyList_New(0))) goto done;

    if (noqueue) {
        GET(v, E_ERROR)
        if (!(error = masked_text(v, &pol)) || set(attrs, A_ERROR, error) < 0) goto done;
        int has_error = PyObject_IsTrue(error);
        if (has_error < 0 || add_text(parts, "NOQUEUE ") < 0 || add_part(parts, qid) < 0 ||
            add_text(parts, ": ") < 0 || add_part(parts, has_error ? error : not_queued) < 0 ||
            !(body = PyUnicode_Join(empty, parts)))
            goto done;
        result = Py_BuildValue("(OOOn)", body, iface, size, (Py_ssize_t)0);
        goto done;
    }
    /* None when recipients are not recorded (mode drop, "<>"): counted from `to` */
    PyObject *rcpts = PyDict_GetItemWithError(attrs, A_RCPT_COUNT);
    if (!rcpts && PyErr_Occurred()) goto done;
    Py_ssize_t recipients;
    if (rcpts) {
        if ((recipients = PyLong_AsSsize_t(rcpts)) == -1 && PyErr_Occurred()) goto done;
    } else if ((recipients = recipient_count(to)) < 0) {
        goto done;
    }
    PyObject *sender = PyDict_GetItemWithError(attrs, A_SENDER[0]);
    if (!sender && PyErr_Occurred()) goto done;
    int has_sender = sender ? PyObject_IsTrue(sender) : 0;
    if (has_sender < 0 || add_text(parts, "QUEUED ") < 0 || add_part(parts, qid) < 0 ||
        (has_sender && (add_text(parts, " from ") < 0 || add_part(parts, sender) < 0)))
        goto done;
    if (rcpts && recipients) {
        PyObject *doms = PyDict_GetItemWithError(attrs, A_RCPT[0]);
        if (!doms && PyErr_Occurred()) goto done;
        doms = doms ? doms : Py_None;
        if (PyList_CheckExact(doms)) {
            if (!(joined = PyUnicode_Join(comma_space, doms))) goto done;
            doms = joined;
        }
        if (add_text(parts, " for ") < 0 || add_part(parts, rcpts) < 0 ||
            add_text(parts, recipients != 1 ? " recipients (" : " recipient (") < 0 || add_part(parts, doms) < 0 ||
            add_text(parts, ")") < 0)
            goto done;
    }
    if (size != Py_None && (add_text(parts, ", ") < 0 || add_part(parts, size_int) < 0 ||
                            add_text(parts, " bytes") < 0))
        goto done;
    int has_iface = PyObject_IsTrue(iface);
    if (has_iface < 0 || (has_iface && (add_text(parts, " via ") < 0 || add_part(parts, iface) < 0))) goto done;
    if (!(body = PyUnicode_Join(empty, parts))) goto done;
    result = Py_BuildValue("(OOOn)", body, iface, size, recipients);
#undef GET
done:
    Py_DECREF(pol.tuple);
    Py_XDECREF(size_int);
    Py_XDECREF(error);
    Py_XDECREF(parts);
    Py_XDECREF(body);
    Py_XDECREF(joined);
    return result;
}

/* fields.pick_py(d, keys): {k: d.get(k) for k in keys} */
static PyObject *pick(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyDict_Check(args[0]) || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "pick(d: dict, keys: tuple)");
        return NULL;
    }
    PyObject *out = PyDict_New();
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args[1]); i++) {
        PyObject *k = PyTuple_GET_ITEM(args[1], i), *v = get(args[0], k);
        if (!v || set(out, k, v) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
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
    {"queued_fields", (PyCFunction)(void (*)(void))queued_fields, METH_FASTCALL,
     "queued_fields(entry, attrs, action, queue_id, red) -> tuple; see signals/fields.py"},
    {"mask_addresses", mask_addresses, METH_O, "privacy.ADDRESS_IN_TEXT.sub(r'***@\\1', text), ASCII text"},
    {"pick", (PyCFunction)(void (*)(void))pick, METH_FASTCALL, "pick(d, keys) -> {k: d.get(k) for k in keys}"},
    {"setup", setup, METH_VARARGS, "setup(domain_part, smtp_reply): the Python fallbacks for non-ASCII text"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fields", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fields(void) {
    if (!empty && intern_all() < 0) return NULL;
    return PyModule_Create(&module);
}
