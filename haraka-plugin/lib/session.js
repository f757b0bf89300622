'use strict';

// Inbound SMTP: what the hooks of one connection saw, reported as two events
// (docs/events.md):
//
//   haraka.transaction  when a transaction ends (queue_ok, or Haraka resets it:
//                       refused, deferred, or ended by the client), with every
//                       recipient's outcome and the reply each one got;
//   haraka.connection   at disconnect: accepted or refused, and the
//                       refusals outside transactions (connect, HELO, ...).
//
// The state lives on Haraka's own connection and transaction objects under
// symbols (invisible to other plugins, not serialized with transaction
// notes), so it goes when they go: nothing to evict.
//
// Who decided what: a recipient's outcome comes from Haraka's own counters
// (transaction.rcpt_count, incremented as each RCPT is answered), the
// refusing plugin and its reply from the `deny` hook, an accepted recipient's
// reply from `rcpt_ok`. A transaction's final reply is the one Haraka last
// wrote (connection.last_response) when it ends by a reply.

const { denialReply, parseReply, messageText } = require('./replies');

const CONN = Symbol('otel-mta connection');
const TXN = Symbol('otel-mta transaction');

const STR = 255;
const ADDR = 998;
const MAX_REFUSALS = 20;

// deny hooks that refuse the whole connection (its greeting)
const CONNECTION_REFUSALS = new Set(['connect_init', 'lookup_rdns', 'connect']);
// deny hooks that end the transaction
const TRANSACTION_REFUSALS = new Set(['mail', 'data', 'data_post', 'queue', 'queue_outbound']);
const RECIPIENT_REFUSALS = new Set(['rcpt', 'rcpt_ok']);

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

/**
 * The bare address of a Haraka Address: `.address` is a string in
 * @haraka/email-address 3 and a method (or a callable string) in older
 * versions; '' for the null sender.
 */
function addressOf(addr) {
    if (!addr) {
        return '';
    }
    if (typeof addr === 'string') {
        return addr;
    }
    try {
        const a = addr.address;
        const s = typeof a === 'function' ? a.call(addr) : a;
        return s === undefined || s === null ? '' : String(s);
    } catch (err) {
        return '';
    }
}

function formatted(addr) {
    try {
        return addr && typeof addr.format === 'function' ? String(addr.format()) : `<${addressOf(addr)}>`;
    } catch (err) {
        return `<${addressOf(addr)}>`;
    }
}

function isConnection(obj) {
    // the deny hook also runs for outbound (HMailItem) objects
    return !!obj && typeof obj === 'object' && obj.constructor && obj.constructor.name === 'Connection';
}

class Session {
    /**
     * @param {object} opts
     * @param {function} opts.push adds an event to the buffer
     * @param {number} opts.maxRecipients recipients listed per transaction (the rest are counted)
     * @param {boolean} opts.noteMessageId keep the Message-ID in transaction notes of relayed mail
     *   (they go into Haraka's queue file, so outbound hooks can put deliveries in the message's trace)
     */
    constructor(opts) {
        this.push = opts.push;
        this.maxRecipients = opts.maxRecipients;
        this.noteMessageId = !!opts.noteMessageId;
    }

    conn(connection, now) {
        let s = connection[CONN];
        if (!s) {
            const started = connection.start_time;
            s = connection[CONN] = {
                start_ms: typeof started === 'number' && started > 0 ? started : now,
                refused: false,
                refusals: null
            };
        }
        return s;
    }

    txn(connection) {
        const t = connection.transaction;
        return t ? t[TXN] : undefined;
    }

    // -- hooks ----------------------------------------------------------------------

    connect(connection, now) {
        this.conn(connection, now);
    }

    /** mail: the transaction starts (Haraka made it just before this hook). */
    mail(connection, params, now) {
        const t = connection.transaction;
        if (!t) {
            return;
        }
        this.conn(connection, now);
        const from = Array.isArray(params) ? params[0] : undefined;
        t[TXN] = {
            start_ms: now,
            mail_from: from,
            rcpts: [],
            current: null, // the recipient whose answer has not been seen yet
            counted: { accept: 0, tempfail: 0, reject: 0 },
            omitted: null,
            refusal: null,
            stage: 'mail',
            data_start_ms: 0,
            data_end_ms: 0,
            message_id: undefined,
            queued: undefined,
            done: false
        };
    }

    rcpt(connection, params, now) {
        const t = connection.transaction;
        const st = t && t[TXN];
        if (!st) {
            return;
        }
        this.settle(t, st);
        st.refusal = null;
        st.stage = 'rcpt';
        const rcpt = Array.isArray(params) ? params[0] : undefined;
        st.current = { rcpt, time_ms: now, ok: undefined, denial: null };
    }

    /** rcpt_ok runs once the rcpt hooks accepted; its reply is Haraka's last_rcpt_msg or the default. */
    rcptOk(connection, rcpt) {
        const st = this.txn(connection);
        const cur = st && st.current;
        if (cur) {
            const msg = messageText(connection.last_rcpt_msg);
            cur.ok = msg || `recipient ${formatted(cur.rcpt || rcpt)} OK`;
            cur.denial = null; // a refusal of an earlier rcpt hook was overridden
        }
    }

    data(connection, now) {
        const t = connection.transaction;
        const st = t && t[TXN];
        if (!st) {
            return;
        }
        this.settle(t, st);
        st.refusal = null;
        st.stage = 'data';
        st.data_start_ms = now;
    }

    dataPost(connection, now) {
        const t = connection.transaction;
        const st = t && t[TXN];
        if (!st) {
            return;
        }
        st.refusal = null;
        st.stage = 'data_post';
        st.data_end_ms = now;
        const mid = messageIdOf(t);
        st.message_id = mid;
        if (mid && this.noteMessageId && connection.relaying && t.notes && typeof t.notes === 'object') {
            t.notes.otel_mta_message_id = mid;
        }
    }

    queue(connection) {
        const st = this.txn(connection);
        if (st) {
            st.refusal = null;
            st.stage = 'queue';
        }
    }

    /**
     * pre_send_trans_email: Haraka's outbound is queueing the transaction
     * (its own outbound queue, for a client it relays for, when no queue
     * plugin took it): the delivery events that follow complete the message.
     * `connection` is Haraka's stand-in `{ transaction }` here.
     */
    outboundQueued(connection) {
        const t = connection && connection.transaction;
        const st = t && t[TXN];
        if (st) {
            st.outbound = true;
        }
    }

    maxDataExceeded(connection, now) {
        const st = this.txn(connection);
        if (st) {
            st.stage = 'max_data_exceeded';
            st.data_end_ms = now;
        }
    }

    /** queue_ok: accepted; Haraka answers 250 with `msg`. */
    queueOk(connection, msg, now) {
        const t = connection.transaction;
        const st = t && t[TXN];
        if (!st || st.done) {
            return;
        }
        st.queued = messageText(msg) || 'Message Queued';
        this.finish(connection, t, st, now);
    }

    /** deny: [retval, msg, plugin name, function name, params, hook] */
    deny(connection, params, now) {
        if (!isConnection(connection) || !Array.isArray(params)) {
            return;
        }
        const [retval, msg, plugin, , , hook] = params;
        const t = connection.transaction;
        const st = t && t[TXN];
        if (st && RECIPIENT_REFUSALS.has(hook) && st.current) {
            const cur = st.current;
            const reply = denialReply(hook, retval, hook === 'rcpt_ok' && !msg ? connection.last_rcpt_msg : msg, formatted(cur.rcpt));
            if (reply) {
                cur.denial = { stage: hook, code: reply.code, reply: reply.text, plugin: str(plugin, 128) };
            }
            return;
        }
        if (st && TRANSACTION_REFUSALS.has(hook)) {
            if (hook === 'data') {
                st.data_start_ms = 0; // no 354: the message data never came
            }
            const addr = hook === 'mail' ? formatted(st.mail_from) : undefined;
            const reply = denialReply(hook, retval, msg, addr, t.uuid);
            if (reply) {
                st.refusal = { stage: hook, code: reply.code, reply: reply.text, plugin: str(plugin, 128), time_ms: now };
            }
            return;
        }
        // outside a transaction: the connection's own refusals
        const reply = denialReply(hook, retval, msg, undefined, undefined);
        if (!reply) {
            return;
        }
        const cs = this.conn(connection, now);
        if (CONNECTION_REFUSALS.has(hook)) {
            cs.refused = true;
        }
        cs.refusals = cs.refusals || [];
        if (cs.refusals.length < MAX_REFUSALS) {
            const refusal = { stage: str(hook, 64) || 'unknown', code: reply.code, reply: reply.text, time_ms: now };
            const p = str(plugin, 128);
            if (p) {
                refusal.plugin = p;
            }
            cs.refusals.push(refusal);
        }
    }

    /** reset_transaction: the transaction ends (after the reply that ended it, if any). */
    reset(connection, now) {
        const t = connection.transaction;
        const st = t && t[TXN];
        if (st && !st.done) {
            this.finish(connection, t, st, now);
        }
    }

    disconnect(connection, now) {
        const cs = this.conn(connection, now);
        const t = connection.transaction;
        const st = t && t[TXN];
        if (st && !st.done) {
            this.finish(connection, t, st, now);
        }
        const event = {
            id: '',
            type: 'haraka.connection',
            time_ms: now,
            connection_id: str(connection.uuid, 64) || 'unknown',
            start_ms: cs.start_ms,
            outcome: cs.refused ? 'refused' : 'accepted',
            transactions: count(connection.tran_count)
        };
        client(connection, event);
        if (cs.refusals) {
            if (cs.refused) {
                // the exact greeting refusal, when it was the last reply
                const last = parseReply(connection.last_response);
                const first = cs.refusals.find(r => CONNECTION_REFUSALS.has(r.stage));
                if (last && last.code >= 400 && first && last.code === first.code) {
                    first.reply = last.text;
                }
            }
            event.refusals = cs.refusals;
        }
        this.push(event);
    }

    // -- a transaction's end --------------------------------------------------------

    /** The answer to the pending recipient, from Haraka's counters: accept, tempfail or reject. */
    settle(t, st) {
        const cur = st.current;
        if (!cur) {
            return;
        }
        const counts = t.rcpt_count;
        let outcome = 'aborted';
        if (counts && typeof counts === 'object') {
            const c = st.counted;
            if (counts.accept > c.accept) {
                outcome = 'accepted';
            } else if (counts.reject > c.reject) {
                outcome = 'refused';
            } else if (counts.tempfail > c.tempfail) {
                outcome = 'deferred';
            }
            c.accept = counts.accept;
            c.reject = counts.reject;
            c.tempfail = counts.tempfail;
        }
        st.current = null;
        if (st.rcpts.length >= this.maxRecipients) {
            st.omitted = st.omitted || { accepted: 0, refused: 0, deferred: 0, aborted: 0 };
            st.omitted[outcome]++;
            return;
        }
        const r = { address: str(addressOf(cur.rcpt), ADDR) || '', outcome, time_ms: cur.time_ms };
        if (outcome === 'accepted') {
            r.code = 250;
            r.reply = cur.ok || `recipient ${formatted(cur.rcpt)} OK`;
        } else if (outcome !== 'aborted') {
            const d = cur.denial;
            if (d) {
                r.code = d.code;
                r.reply = d.reply;
                r.stage = d.stage;
                if (d.plugin) {
                    r.plugin = d.plugin;
                }
            } else {
                // no plugin took the recipient (rcpt hooks all returned CONT): Haraka refuses it itself
                r.code = 550;
                r.reply = `I cannot deliver mail for ${formatted(cur.rcpt)}`;
                r.stage = 'rcpt';
            }
        }
        st.rcpts.push(r);
    }

    finish(connection, t, st, now) {
        st.done = true;
        this.settle(t, st);
        const event = {
            id: '',
            type: 'haraka.transaction',
            time_ms: now,
            transaction_id: str(t.uuid, 64) || 'unknown',
            connection_id: str(connection.uuid, 64) || 'unknown',
            start_ms: st.start_ms,
            outcome: 'aborted',
            mail_from: str(addressOf(st.mail_from), ADDR) || '',
            recipients: st.rcpts
        };
        if (st.omitted) {
            event.recipients_omitted = st.omitted;
        }
        let refusal = st.refusal;
        if (st.queued !== undefined) {
            event.outcome = 'accepted';
            event.code = 250;
            event.reply = st.queued;
            event.stage = 'queue_ok';
            if (st.outbound) {
                event.outbound_queue = true;
            }
        } else {
            const last = parseReply(connection.last_response);
            const replied = last && last.code >= 400 ? last : null;
            if (refusal || (st.data_start_ms && replied)) {
                // refused or deferred by a plugin (deny) or by Haraka itself after DATA
                const code = replied ? replied.code : refusal.code;
                event.outcome = code >= 500 ? 'refused' : 'deferred';
                event.code = code;
                event.reply = replied ? replied.text : refusal.reply;
                event.stage = refusal ? refusal.stage : st.stage;
                if (refusal && refusal.plugin) {
                    event.plugin = refusal.plugin;
                }
            } else if (!st.data_start_ms && st.rcpts.length && !st.rcpts.some(r => r.outcome === 'accepted' || r.outcome === 'aborted')) {
                // every recipient refused: the last refusal answers for the transaction
                const lastRcpt = st.rcpts[st.rcpts.length - 1];
                event.outcome = st.rcpts.some(r => r.outcome === 'refused') ? 'refused' : 'deferred';
                event.code = lastRcpt.code;
                event.reply = lastRcpt.reply;
                event.stage = lastRcpt.stage || 'rcpt';
                if (lastRcpt.plugin) {
                    event.plugin = lastRcpt.plugin;
                }
            } else {
                event.stage = st.stage; // the client went away, reset or quit before the end
            }
        }
        // read again: a plugin may have added it since (Haraka's outbound adds one to relayed mail without)
        const mid = (st.data_start_ms && messageIdOf(t)) || st.message_id;
        if (mid) {
            event.message_id = mid;
        }
        if (st.data_start_ms) {
            event.data_start_ms = st.data_start_ms;
            const size = count(t.data_bytes);
            if (size !== undefined) {
                event.size = size;
            }
        }
        if (st.data_end_ms) {
            event.data_end_ms = st.data_end_ms;
        }
        client(connection, event);
        this.push(event);
    }
}

function count(value) {
    return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? Math.floor(value) : undefined;
}

function messageIdOf(t) {
    try {
        const header = t.header;
        const raw = header && typeof header.get === 'function' ? header.get('Message-ID') : '';
        if (typeof raw !== 'string') {
            return undefined;
        }
        // a folded or repeated header: the first id, on one line
        const mid = raw.replace(/\r?\n[ \t]*/g, ' ').trim().split(/\s+(?=<)/)[0];
        return str(mid, ADDR);
    } catch (err) {
        return undefined;
    }
}

/** What describes the client, on both events. */
function client(connection, event) {
    const remote = connection.remote || {};
    const ip = str(remote.ip, 64);
    if (ip) {
        event.remote_ip = ip;
    }
    const host = remote.host;
    if (host && host !== 'NXDOMAIN' && host !== 'DNSERROR' && host !== 'Unknown') {
        event.remote_host = str(host, STR);
    }
    const hello = connection.hello || {};
    const helo = str(hello.host, STR);
    if (helo) {
        event.helo = helo;
    }
    const port = connection.local && connection.local.port;
    if (typeof port === 'number' && port > 0 && port < 65536) {
        event.local_port = port;
    }
    event.tls = !!(connection.tls && connection.tls.enabled);
    event.esmtp = !!connection.esmtp;
    event.relaying = !!connection.relaying;
    const user = connection.notes && connection.notes.auth_user;
    if (user) {
        event.auth_user = str(user, STR);
    }
}

module.exports = { Session, addressOf, formatted, messageIdOf, CONN, TXN };
