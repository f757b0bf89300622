'use strict';

// Deterministic trace and span ids, the same derivation as the sidecar
// (docs/trace-ids.md). spec/trace-id-vectors.json holds the vectors the tests
// reproduce.

const crypto = require('crypto');

// ASCII whitespace only (space, \t, \n, \v, \f, \r), the same set the sidecar
// trims (docs/trace-ids.md). String#trim and Python's str.strip() each trim
// more, and different, Unicode spaces; U+00A0 and the like stay as written.
const TRIM_RE = /^[ \t\n\v\f\r]+|[ \t\n\v\f\r]+$/g;

function strip(value) {
    return value.replace(TRIM_RE, '');
}

// Lowercase A-Z only; every other character stays as written.
function asciiLower(value) {
    return value.replace(/[A-Z]+/g, m => m.toLowerCase());
}

function normalizeMessageId(value) {
    if (typeof value !== 'string' || !value) {
        return null;
    }
    let mid = strip(value);
    if (mid.startsWith('<')) {
        mid = mid.slice(1);
    }
    if (mid.endsWith('>')) {
        mid = mid.slice(0, -1);
    }
    mid = strip(mid);
    if (!mid) {
        return null;
    }
    const at = mid.lastIndexOf('@');
    if (at >= 0) {
        mid = mid.slice(0, at) + '@' + asciiLower(mid.slice(at + 1));
    }
    return mid;
}

function traceKey(messageId, queueId) {
    const mid = normalizeMessageId(messageId);
    if (mid !== null) {
        return 'mid:' + mid;
    }
    if (typeof queueId === 'string' && queueId) {
        const qid = strip(queueId);
        if (qid) {
            return 'qid:' + qid;
        }
    }
    return null;
}

function digest(text, size) {
    const out = crypto.createHash('sha256').update(text, 'utf8').digest().subarray(0, size);
    if (out.every(b => b === 0)) {
        // an all-zero id is invalid in OTLP
        out[size - 1] = 1;
    }
    return out;
}

/** 16-byte trace id as 32 lowercase hex digits, or null without any identity. */
function traceIdFor(messageId, queueId) {
    const key = traceKey(messageId, queueId);
    return key === null ? null : digest(key, 16).toString('hex');
}

/** The message's root span (one per queue entry). */
function rootSpanId(queueId) {
    return digest('root:' + strip(String(queueId)), 8).toString('hex');
}

/** One delivery attempt of one recipient; defcount is 0 unless DEFERRED. */
function attemptSpanId(queueId, seq, action, defcount) {
    const n = Math.trunc(Number(defcount)) || 0;
    return digest(`attempt:${strip(String(queueId))}:${seq}:${action}:${n}`, 8).toString('hex');
}

/** A child of an attempt span: connect, tls or smtp. */
function phaseSpanId(attemptSpanHex, phase) {
    return digest(`phase:${attemptSpanHex}:${phase}`, 8).toString('hex');
}

/** W3C traceparent value for a message: its trace id and root span id. */
function traceparent(messageId, queueId) {
    const traceId = traceIdFor(messageId, queueId);
    if (!traceId || typeof queueId !== 'string' || !strip(queueId)) {
        return null;
    }
    return `00-${traceId}-${rootSpanId(queueId)}-01`;
}

module.exports = {
    normalizeMessageId,
    traceKey,
    traceIdFor,
    rootSpanId,
    attemptSpanId,
    phaseSpanId,
    traceparent
};
