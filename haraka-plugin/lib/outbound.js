'use strict';

// Haraka as a relay: each delivery attempt of its outbound queue, reported as
// a haraka.delivery event when the attempt ends (delivered, deferred or
// bounce hook). The hook object is the HMailItem: `todo` holds the queue
// entry (uuid = the inbound transaction's, plus `.N` per destination domain;
// notes = the transaction's notes, where the inbound side left the
// Message-ID), `num_failures` the deferrals so far.

const { messageText } = require('./replies');
const { addressOf } = require('./session');

const START = Symbol('otel-mta attempt start');
const ADDR = 998;
const CAP = 1024;

function str(value, max) {
    if (value === undefined || value === null) {
        return undefined;
    }
    const s = typeof value === 'string' ? value : String(value);
    if (!s) {
        return undefined;
    }
    return s.length > max ? s.slice(0, max) : s;
}

function count(value) {
    const n = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : value;
    return typeof n === 'number' && Number.isFinite(n) && n >= 0 ? Math.floor(n) : undefined;
}

function smtpCode(value) {
    const n = count(value);
    return n !== undefined && n >= 200 && n <= 599 ? n : undefined;
}

class Outbound {
    /**
     * @param {object} opts
     * @param {function} opts.push adds an event to the buffer
     * @param {number} opts.maxRecipients recipients listed per event
     */
    constructor(opts) {
        this.push = opts.push;
        this.maxRecipients = opts.maxRecipients;
    }

    /** send_email: an attempt starts (also for a retry). */
    start(hmail, now) {
        if (hmail && typeof hmail === 'object') {
            hmail[START] = now;
        }
    }

    /** delivered: [host, ip, response, delay, port, mode, ok_recips, secured, authenticated] */
    delivered(hmail, params, now) {
        const p = Array.isArray(params) ? params : [];
        const event = this.base(hmail, 'delivered', now);
        if (!event) {
            return;
        }
        set(event, 'mx', str(p[0], 255));
        set(event, 'ip', str(p[1], 64));
        set(event, 'reply', str(messageText(p[2]), CAP));
        set(event, 'port', count(p[4]));
        set(event, 'mode', str(p[5], 16));
        event.tls = !!p[7];
        event.auth = !!p[8];
        this.recipients(event, Array.isArray(p[6]) && p[6].length ? p[6] : hmail.todo.rcpt_to);
        this.push(event);
    }

    /** deferred: {delay (s to the next try), err (text), mx?, fail_recips?} */
    deferred(hmail, params, now) {
        const p = params && typeof params === 'object' ? params : {};
        const event = this.base(hmail, 'deferred', now);
        if (!event) {
            return;
        }
        mx(event, p.mx);
        set(event, 'reply', str(messageText(p.err instanceof Error ? p.err.message : p.err), CAP));
        set(event, 'retry_in_s', count(p.delay));
        // fail_recips: the Address objects the MX answered, with their dsn_* fields
        // (the split queue entry's own todo is read back from its file without them)
        this.recipients(event, nonEmpty(p.fail_recips) || hmail.todo.rcpt_to);
        this.push(event);
    }

    /** bounce: the Error Haraka bounces with (mx, bounced_rcpt on it when the MX refused). */
    bounce(hmail, err, now) {
        const event = this.base(hmail, 'bounced', now);
        if (!event) {
            return;
        }
        mx(event, err && err.mx);
        set(event, 'reply', str(messageText(err instanceof Error ? err.message : err), CAP));
        this.recipients(event, nonEmpty(err && err.bounced_rcpt) || hmail.todo.rcpt_to);
        this.push(event);
    }

    base(hmail, outcome, now) {
        const todo = hmail && hmail.todo;
        if (!todo || typeof todo !== 'object') {
            return null;
        }
        const uuid = str(todo.uuid, 64);
        if (!uuid) {
            return null;
        }
        const event = { id: '', type: 'haraka.delivery', time_ms: now, transaction_id: uuid, outcome, domain: str(todo.domain, 255) || '' };
        const notes = todo.notes;
        const mid = notes && typeof notes === 'object' ? str(notes.otel_mta_message_id, ADDR) : undefined;
        set(event, 'message_id', mid);
        const started = hmail[START];
        if (typeof started === 'number' && started <= now) {
            event.start_ms = started;
        }
        set(event, 'queued_ms', count(todo.queue_time));
        // deferrals before this attempt (temp_fail counts the deferral it reports)
        const fails = count(hmail.num_failures);
        if (fails !== undefined) {
            event.attempt = outcome === 'deferred' && fails > 0 ? fails - 1 : fails;
        }
        return event;
    }

    recipients(event, list) {
        const out = [];
        let omitted = 0;
        for (const rcpt of Array.isArray(list) ? list : []) {
            if (out.length >= this.maxRecipients) {
                omitted++;
                continue;
            }
            const r = { address: str(addressOf(rcpt), ADDR) || '' };
            if (rcpt && typeof rcpt === 'object') {
                set(r, 'code', smtpCode(rcpt.dsn_smtp_code));
                set(r, 'status', str(rcpt.dsn_status, 32));
                set(r, 'reply', str(messageText(rcpt.dsn_smtp_response), CAP));
            }
            out.push(r);
        }
        event.recipients = out;
        if (omitted) {
            event.recipients_omitted = omitted;
        }
    }
}

function nonEmpty(list) {
    return Array.isArray(list) && list.length ? list : null;
}

function set(obj, key, value) {
    if (value !== undefined && value !== '') {
        obj[key] = value;
    }
}

function mx(event, value) {
    if (value && typeof value === 'object') {
        set(event, 'mx', str(value.from_dns || value.exchange, 255));
        set(event, 'port', count(value.port));
    }
}

module.exports = { Outbound };
