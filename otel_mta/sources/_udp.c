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
 *
 * Reader(fd, max_bytes): a thread that reads the socket the same way, without
 * the GIL, into a queue of memory blocks bounded by max_bytes, and signals an
 * eventfd that the event loop watches (fileno()); take(max) hands the queued
 * datagrams over as above. While the interpreter is busy (a burst, a batch
 * being encoded, a slower moment of the machine) datagrams keep leaving the
 * kernel's buffer, which rmem_max caps at a few MiB, and the system calls
 * are off the interpreter's thread. What does not fit is counted (overflow),
 * never blocked on. sources/udp.py explains when it is used.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

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

/* One recvmmsg(2) of up to `want` datagrams, each into its SLOT of `slots`, without blocking. */
typedef struct {
    struct mmsghdr msgs[VLEN];
    struct iovec iov[VLEN];
    struct sockaddr_storage addrs[VLEN];
} batch;

static int read_batch(int fd, char *slots, batch *b, int want) {
    memset(b->msgs, 0, sizeof(struct mmsghdr) * want);
    for (int i = 0; i < want; i++) {
        b->iov[i].iov_base = slots + (size_t)i * SLOT;
        b->iov[i].iov_len = SLOT;
        b->msgs[i].msg_hdr.msg_iov = &b->iov[i];
        b->msgs[i].msg_hdr.msg_iovlen = 1;
        b->msgs[i].msg_hdr.msg_name = &b->addrs[i];
        b->msgs[i].msg_hdr.msg_namelen = sizeof b->addrs[i];
    }
    return recvmmsg(fd, b->msgs, want, MSG_DONTWAIT, NULL);
}

static PyObject *recv_many(PyObject *self, PyObject *args) {
    int fd;
    Py_ssize_t max;
    if (!PyArg_ParseTuple(args, "in", &fd, &max)) return NULL;
    if (!slots && !(slots = PyMem_Malloc((size_t)VLEN * SLOT))) return PyErr_NoMemory();
    batch b;
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    while (PyList_GET_SIZE(out) < max) {
        Py_ssize_t left = max - PyList_GET_SIZE(out);
        int want = left < VLEN ? (int)left : VLEN;
        int n = read_batch(fd, slots, &b, want);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
            if (PyList_GET_SIZE(out)) break;  /* hand over what was read; the error repeats next time */
            Py_DECREF(out);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        for (int i = 0; i < n; i++) {
            PyObject *peer = peer_of(&b.addrs[i], b.msgs[i].msg_hdr.msg_namelen);
            PyObject *item = peer ? Py_BuildValue("(y#N)", slots + (size_t)i * SLOT,
                                                  (Py_ssize_t)b.msgs[i].msg_len, peer) : NULL;
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


/* ---- Reader: a reading thread and a bounded queue ---------------------------------------- */

/* The largest datagram and its header fit in one block, and a block stays under
 * glibc's mmap threshold (128 KiB): blocks come from the heap and are reused,
 * not mapped and faulted in anew. */
#define BLOCK_SIZE (96 * 1024)
#define SPARE_BLOCKS 2            /* empty blocks kept for reuse; more are freed (RSS falls back after a burst) */
#define GATHER_NS 2000000         /* after draining the socket, let datagrams gather this long (2 ms) */

typedef struct block {
    struct block *next;
    size_t len;  /* bytes written (by the thread) */
    size_t pos;  /* bytes taken (by take()) */
    char data[BLOCK_SIZE];
} block;

/* one queued datagram: this header, the sender's address, the payload; 8-byte aligned */
typedef struct {
    uint32_t len;
    uint16_t addr_len;
    uint16_t pad;
} record;

#define ALIGN8(n) (((n) + 7) & ~(size_t)7)

typedef struct {
    PyObject_HEAD
    int fd;                /* the socket (owned by Python) */
    int wake_fd;           /* eventfd: datagrams queued */
    int stop_fd;           /* eventfd: stop the thread */
    pthread_t thread;
    int running, lock_ready;
    pthread_mutex_t lock;  /* guards everything below */
    block *head, *tail, *spare;
    size_t blocks, spares, max_blocks;
    size_t queued;                 /* datagrams waiting */
    unsigned long long overflow;   /* datagrams dropped: the queue was full */
    int error;                     /* the last errno of a failed read (not EAGAIN) */
    char *slots;                   /* VLEN * SLOT, the thread's read buffer */
} Reader;

/* Append one datagram; -1 when the queue is full. Lock held. */
static int queue_append(Reader *r, const struct sockaddr_storage *sa, socklen_t sa_len, const char *data,
                        size_t len) {
    size_t need = ALIGN8(sizeof(record) + sa_len + len);
    block *b = r->tail;
    if (!b || BLOCK_SIZE - b->len < need) {
        block *nb = r->spare;
        if (nb) {
            r->spare = nb->next;
            r->spares--;
        } else if (r->blocks < r->max_blocks && (nb = malloc(sizeof(block)))) {
            r->blocks++;
        } else {
            return -1;
        }
        nb->next = NULL;
        nb->len = nb->pos = 0;
        if (b) b->next = nb;
        else r->head = nb;
        r->tail = b = nb;
    }
    record h = {(uint32_t)len, (uint16_t)sa_len, 0};
    char *p = b->data + b->len;
    memcpy(p, &h, sizeof h);
    memcpy(p + sizeof h, sa, sa_len);
    memcpy(p + sizeof h + sa_len, data, len);
    b->len += need;
    r->queued++;
    return 0;
}

/* A block that was taken to the end: reuse it, or free it beyond the spares. Lock held. */
static void queue_release(Reader *r, block *b) {
    if (r->spares < SPARE_BLOCKS) {
        b->next = r->spare;
        r->spare = b;
        r->spares++;
    } else {
        free(b);
        r->blocks--;
    }
}

static void *reader_run(void *arg) {
    Reader *r = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);  /* signals are the interpreter's thread's to handle */
    batch b;
    struct pollfd pfd[2] = {{r->fd, POLLIN, 0}, {r->stop_fd, POLLIN, 0}};
    uint64_t one = 1;
    for (;;) {
        if (poll(pfd, 2, -1) < 0 && errno != EINTR) break;
        if (pfd[1].revents) break;
        int got = 0;
        for (;;) {  /* read until the socket is empty */
            int n = read_batch(r->fd, r->slots, &b, VLEN);
            if (n < 0) {
                if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                    pthread_mutex_lock(&r->lock);
                    r->error = errno;  /* e.g. ICMP errors surfacing on the socket: noted, reading goes on */
                    pthread_mutex_unlock(&r->lock);
                }
                break;
            }
            pthread_mutex_lock(&r->lock);
            for (int i = 0; i < n; i++)
                if (queue_append(r, &b.addrs[i], b.msgs[i].msg_hdr.msg_namelen, r->slots + (size_t)i * SLOT,
                                 b.msgs[i].msg_len) < 0)
                    r->overflow++;
            pthread_mutex_unlock(&r->lock);
            got += n;
            if (n < VLEN) break;
        }
        if (got && write(r->wake_fd, &one, sizeof one) < 0) { /* the counter cannot overflow at 1 a read */ }
        /* Waking for every datagram would cost more than the datagram (see udp.py's COALESCE_S):
         * wait a moment, or until told to stop. */
        struct pollfd stop = {r->stop_fd, POLLIN, 0};
        if (poll(&stop, 1, GATHER_NS / 1000000) > 0) break;
    }
    return NULL;
}

static void reader_stop(Reader *r) {
    if (!r->running) return;
    uint64_t one = 1;
    if (write(r->stop_fd, &one, sizeof one) < 0) { /* an eventfd write of 1 does not fail */ }
    Py_BEGIN_ALLOW_THREADS
    pthread_join(r->thread, NULL);
    Py_END_ALLOW_THREADS
    r->running = 0;
}

static int reader_init(Reader *r, PyObject *args, PyObject *kw) {
    int fd;
    Py_ssize_t max_bytes;
    if (!PyArg_ParseTuple(args, "in:Reader", &fd, &max_bytes)) return -1;
    if (r->running) {
        PyErr_SetString(PyExc_RuntimeError, "Reader already started");
        return -1;
    }
    r->fd = fd;
    r->max_blocks = max_bytes / BLOCK_SIZE > 0 ? (size_t)(max_bytes / BLOCK_SIZE) : 1;
    r->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    r->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    r->slots = PyMem_RawMalloc((size_t)VLEN * SLOT);
    if (r->wake_fd < 0 || r->stop_fd < 0 || !r->slots) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    pthread_mutex_init(&r->lock, NULL);
    r->lock_ready = 1;
    int rc = pthread_create(&r->thread, NULL, reader_run, r);
    if (rc) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    r->running = 1;
    return 0;
}

static PyObject *reader_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    Reader *r = (Reader *)type->tp_alloc(type, 0);
    if (r) r->wake_fd = r->stop_fd = r->fd = -1;
    return (PyObject *)r;
}

static void reader_dealloc(Reader *r) {
    reader_stop(r);
    for (block *b = r->head; b;) { block *n = b->next; free(b); b = n; }
    for (block *b = r->spare; b;) { block *n = b->next; free(b); b = n; }
    if (r->wake_fd >= 0) close(r->wake_fd);
    if (r->stop_fd >= 0) close(r->stop_fd);
    PyMem_RawFree(r->slots);
    if (r->lock_ready) pthread_mutex_destroy(&r->lock);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

/* take(max) -> [(data, (host, port)), ...]: up to max queued datagrams, oldest first */
static PyObject *reader_take(Reader *r, PyObject *arg) {
    Py_ssize_t max = PyLong_AsSsize_t(arg);
    if (max == -1 && PyErr_Occurred()) return NULL;
    uint64_t count;
    if (read(r->wake_fd, &count, sizeof count) < 0) { /* EAGAIN: nothing signalled */ }
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    pthread_mutex_lock(&r->lock);
    while (PyList_GET_SIZE(out) < max && r->queued) {
        block *b = r->head;
        if (b->pos == b->len) {  /* taken to the end, and the thread has moved on to the next */
            r->head = b->next;
            queue_release(r, b);
            continue;
        }
        record h;
        memcpy(&h, b->data + b->pos, sizeof h);
        const char *addr = b->data + b->pos + sizeof h;
        PyObject *peer = peer_of((const struct sockaddr_storage *)addr, h.addr_len);
        PyObject *item = peer ? Py_BuildValue("(y#N)", addr + h.addr_len, (Py_ssize_t)h.len, peer) : NULL;
        if (!item || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_CLEAR(out);
            break;
        }
        Py_DECREF(item);
        b->pos += ALIGN8(sizeof h + h.addr_len + h.len);
        r->queued--;
    }
    if (r->head && r->head == r->tail && r->head->pos == r->head->len) r->head->pos = r->head->len = 0;
    int more = r->queued > 0;
    pthread_mutex_unlock(&r->lock);
    uint64_t one = 1;
    if (more && write(r->wake_fd, &one, sizeof one) < 0) { /* cannot fail */ }
    return out;
}

static PyObject *reader_fileno(Reader *r, PyObject *unused) { return PyLong_FromLong(r->wake_fd); }

static PyObject *reader_stop_py(Reader *r, PyObject *unused) {
    reader_stop(r);
    Py_RETURN_NONE;
}

/* stats() -> (queued datagrams, overflow, bytes of blocks held, last read errno or 0) */
static PyObject *reader_stats(Reader *r, PyObject *unused) {
    pthread_mutex_lock(&r->lock);
    size_t queued = r->queued, blocks = r->blocks;
    unsigned long long overflow = r->overflow;
    int error = r->error;
    r->error = 0;
    pthread_mutex_unlock(&r->lock);
    return Py_BuildValue("(nKni)", (Py_ssize_t)queued, overflow, (Py_ssize_t)(blocks * sizeof(block)), error);
}

static PyMethodDef reader_methods[] = {
    {"take", (PyCFunction)reader_take, METH_O, "take(max) -> [(data, (host, port)), ...], oldest first"},
    {"fileno", (PyCFunction)reader_fileno, METH_NOARGS, "the eventfd that becomes readable when datagrams are queued"},
    {"stop", (PyCFunction)reader_stop_py, METH_NOARGS, "stop the thread; what it queued can still be taken"},
    {"stats", (PyCFunction)reader_stats, METH_NOARGS,
     "stats() -> (queued, overflow, bytes held, last read errno or 0; the errno is cleared)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "otel_mta.sources._udp.Reader",
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Reader(fd, max_bytes): reads a UDP socket in a thread into a bounded queue",
    .tp_new = reader_new,
    .tp_init = (initproc)reader_init,
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_methods = reader_methods,
};

static PyMethodDef methods[] = {
    {"recv_many", recv_many, METH_VARARGS,
     "recv_many(fd, max) -> [(data, (host, port)), ...]: datagrams waiting on a non-blocking UDP socket."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_udp", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__udp(void) {
    if (PyType_Ready(&ReaderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&ReaderType);
    if (PyModule_AddObject(m, "Reader", (PyObject *)&ReaderType) < 0) {
        Py_DECREF(&ReaderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
