'use strict';

// Builders for the events of docs/events.md, from hook arguments shaped as
// ZoneMTA passes them. Each returns null when the input lacks the ids the
// event needs. Only ids, timings and non-personal fields are copied here;
// log.entry is the one event that carries ZoneMTA's own fields verbatim.

const ID_MAX = 128;
const MESSAGE_ID_MAX = 998;

function str(value, max) {
    if (typeof value === 'string') {
        return value.length > max ? value.slice(0, max) : value;
    }
    if (typeof value === 'number' && Number.isFinite(value)) {
        return String(value);
    }
    return undefined;
}

function int(value) {
    return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? Math.floor(value) : undefined;
}

// The queue id (`id`) of a hook argument, or undefined.
function queueIdOf(obj) {
    return obj && typeof obj === 'object' ? str(obj.id, ID_MAX) : undefined;
}

function time(value) {
    if (value instanceof Date) {
        value = value.getTime();
    }
    return int(value);
}

/**
 * log:entry -> log.entry. The entry object itself is kept, not copied:
 * remotelog() builds a new one for every call and ZoneMTA never touches it
 * again, and a copy of its ~25 keys would cost ~1.5 us per entry (bench).
 * JSON encoding at send time leaves out undefined and function values, as
 * the msgpack datagram does.
 */
function logEntry(entry, now) {
    if (!entry || typeof entry !== 'object') {
        return null;
    }
    const id = entry.id;
    if (typeof id !== 'string' && typeof id !== 'number') {
        return null;
    }
    return { id: '', type: 'log.entry', time_ms: now, entry };
}

function headerMessageId(envelope, messageInfo) {
    // envelope.messageId is set by core/default-headers (also when it only
    // generated an id without adding the header); QUEUED logs the same value.
    let mid = envelope.messageId;
    if (typeof mid !== 'string' || !mid) {
        const headers = envelope.headers;
        mid = headers && typeof headers.getFirst === 'function' ? headers.getFirst('message-id') : '';
    }
    if ((typeof mid !== 'string' || !mid) && messageInfo && typeof messageInfo === 'object') {
        mid = messageInfo['message-id'];
    }
    mid = str(mid, MESSAGE_ID_MAX);
    return mid && mid !== '<>' ? mid : undefined;
}

/** message:headers -> message.headers: the queue id -> Message-ID pair, before QUEUED. */
function messageHeaders(envelope, messageInfo, now) {
    const queueId = queueIdOf(envelope);
    const messageId = queueId && headerMessageId(envelope, messageInfo);
    if (!messageId) {
        return null;
    }
    return { id: '', type: 'message.headers', time_ms: now, queue_id: queueId, message_id: messageId };
}

/** message:queue -> message.queue: the message is stored and about to be queued. */
function messageQueue(envelope, messageInfo, now) {
    const queueId = queueIdOf(envelope);
    if (!queueId) {
        return null;
    }
    return {
        id: '',
        type: 'message.queue',
        time_ms: now,
        queue_id: queueId,
        message_id: headerMessageId(envelope, messageInfo),
        size: int(envelope.bodySize),
        recipients: Array.isArray(envelope.to) ? envelope.to.length : undefined,
        interface: str(envelope.interface, 64)
    };
}

/** queue:release [zone, data] -> queue.release: a recipient left the queue. */
function queueRelease(zone, data, now) {
    const queueId = queueIdOf(data);
    if (!queueId) {
        return null;
    }
    let status = 'unknown';
    if (data.status && typeof data.status === 'object') {
        status = data.status.delivered ? 'delivered' : 'rejected';
    }
    return {
        id: '',
        type: 'queue.release',
        time_ms: now,
        queue_id: queueId,
        seq: str(data.seq, 32),
        zone: zone && typeof zone === 'object' ? str(zone.name, 128) : undefined,
        status
    };
}

/** queue:bounce [bounce, maildrop] -> queue.bounce: a bounce is being generated. */
function queueBounce(bounce, now) {
    const queueId = queueIdOf(bounce);
    if (!queueId) {
        return null;
    }
    return {
        id: '',
        type: 'queue.bounce',
        time_ms: now,
        queue_id: queueId,
        seq: str(bounce.seq, 32),
        zone: str(bounce.zone, 128),
        category: str(bounce.category, 64)
    };
}

/** queue:delayed [delivery, maildrop, {first, prev, last}] -> queue.delayed. */
function queueDelayed(delivery, options, now) {
    const queueId = queueIdOf(delivery);
    if (!queueId) {
        return null;
    }
    const o = options && typeof options === 'object' ? options : {};
    return {
        id: '',
        type: 'queue.delayed',
        time_ms: now,
        queue_id: queueId,
        seq: str(delivery.seq, 32),
        zone: str(delivery.sendingZone, 128),
        category: str(delivery.category, 64),
        first_ms: time(o.first),
        prev_ms: time(o.prev),
        last_ms: time(o.last)
    };
}

module.exports = { logEntry, messageHeaders, messageQueue, queueRelease, queueBounce, queueDelayed, headerMessageId };
