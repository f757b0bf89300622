/*
 * recv_many(fd, max) -> [(data, (host, port)), ...]: up to `max` datagrams
 * that are already waiting on a non-blocking UDP socket, read with recvmmsg(2)
 * 32 at a time. Python's socket module has no recvmmsg; one recvfrom_into per
 * datagram costs ~1.8 us here, this ~0.7 us (PERF-FACTS; bench/remote_log.py).
 *
 * The GIL is held on purpose: the call never blocks (MSG_DONTWAIT), and
 * releasing the GIL once per read would hand the interpreter to any thread
 * waiting for it (the export worker) and back, per datagram.
 *
 * Returns [] when nothing is waiting; raises OSError for other errors (after
 * returning what was read before them, on the next call). remote_log.py falls
 * back to recvfrom_into where this is not built.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define VLEN 32
#define SLOT 65536  /* the largest UDP payload fits: never truncate */

static char *slots;  /* VLEN * SLOT bytes, allocated on first use; pages are touched only as far as data goes */

/* (host, port) of a sender; the same sender as last time gets the same tuple */
static PyObject *peer_of(const struct sockaddr_storage *sa, socklen_t len) {
    static struct sockaddr_storage last;
    static socklen_t last_len;
    static PyObject *last_peer;
    if (last_peer && len == last_len && memcmp(sa, &last, len) == 0) {
        Py_INCREF(last_peer);
        return last_peer;
    }
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        port = ntohs(in6->sin6_port);
    }
    PyObject *peer = Py_BuildValue("(si)", host, port);
    if (!peer) return NULL;
    Py_XSETREF(last_peer, peer);
    Py_INCREF(peer);
    memcpy(&last, sa, len);
    last_len = len;
    return peer;
}

static PyObject *recv_many(PyObject *self, PyObject *args) {
    int fd;
    Py_ssize_t max;
    if (!PyArg_ParseTuple(args, "in", &fd, &max)) return NULL;
    if (!slots && !(slots = PyMem_Malloc((size_t)VLEN * SLOT))) return PyErr_NoMemory();
    struct mmsghdr msgs[VLEN];
    struct iovec iov[VLEN];
    struct sockaddr_storage addrs[VLEN];
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    while (PyList_GET_SIZE(out) < max) {
        Py_ssize_t left = max - PyList_GET_SIZE(out);
        int want = left < VLEN ? (int)left : VLEN;
        memset(msgs, 0, sizeof(struct mmsghdr) * want);
        for (int i = 0; i < want; i++) {
            iov[i].iov_base = slots + (size_t)i * SLOT;
            iov[i].iov_len = SLOT;
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &addrs[i];
            msgs[i].msg_hdr.msg_namelen = sizeof addrs[i];
        }
        int n = recvmmsg(fd, msgs, want, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
            if (PyList_GET_SIZE(out)) break;  /* hand over what was read; the error repeats next time */
            Py_DECREF(out);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        for (int i = 0; i < n; i++) {
            PyObject *peer = peer_of(&addrs[i], msgs[i].msg_hdr.msg_namelen);
            PyObject *item = peer ? Py_BuildValue("(y#N)", slots + (size_t)i * SLOT,
                                                  (Py_ssize_t)msgs[i].msg_len, peer) : NULL;
            if (!item || PyList_Append(out, item) < 0) {
                Py_XDECREF(item);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(item);
        }
        if (n < want) break;  /* drained */
    }
    return out;
}

static PyMethodDef methods[] = {
    {"recv_many", recv_many, METH_VARARGS,
     "recv_many(fd, max) -> [(data, (host, port)), ...]: datagrams waiting on a non-blocking UDP socket."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_udp", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__udp(void) { return PyModule_Create(&module); }
