'use strict';

// Per-delivery phase timing in a sender process. Sender hooks stamp a record
// keyed "<queue id>.<seq>"; the attempt's outcome (the ACCEPTED / DEFERRED /
// REJECTED log entry) turns it into one `delivery.phases` event. The sidecar
// makes each phase a child span of the attempt span (docs/trace-ids.md).
//
// Memory is bounded twice: at most `maxEntries` records (the oldest is evicted
// when full) and none older than `maxAgeMs` (swept on the flush timer). Both
// evictions are counted.

const OUTCOMES = new Set(['ACCEPTED', 'DEFERRED', 'REJECTED']);

class Attempt {
    constructor(queueId, seq, now) {
        this.queueId = queueId;
        this.seq = seq;
        this.created = now;
        this.fetchedAt = 0; // sender:fetch
        this.tries = 0; // sender:connecting (one per connection try)
        this.ips = 0; // sender:connect (one per TCP connect to an MX address)
        this.connectStart = 0;
        this.tryStart = 0;
        this.lastConnectAt = 0;
        this.connectedAt = 0; // sender:connected (greeting, EHLO, STARTTLS done)
        this.readyAt = 0; // sender:connection (after AUTH, or a reused connection)
        this.reused = false;
        this.secure = false;
        this.servername = '';
        this.host = '';
        this.port = 0;
        this.localAddress = '';
        this.tlsStart = 0;
        this.tlsEnd = 0;
        this.tlsFailures = 0;
        this.tlsError = '';
        this.errorAt = 0;
        this.error = '';
        this.action = '';
        this.defcount = 0;
        this.outcomeAt = 0;
        this.envelopeMs = -1;
        this.dataMs = -1;
    }
}

function str(value, max) {
    if (typeof value === 'string') {
        return value.length > max ? value.slice(0, max) : value;
    }
    if (typeof value === 'number' && Number.isFinite(value)) {
        return String(value);
    }
    return '';
}

// A short, non-personal error label: nodemailer's code (ETIMEDOUT, ETLS,
// EENVELOPE...), else the SMTP reply code, else ZoneMTA's category. Never the
// message text, which may quote addresses.
function errorLabel(err) {
    if (!err || typeof err !== 'object') {
        return 'error';
    }
    let label = str(err.code, 32) || str(err.responseCode, 8) || str(err.category, 32) || 'error';
    return label.replace(/[^\w.:-]/g, '_');
}

class PhaseTracker {
    /**
     * @param {object} opts
     * @param {number} opts.maxEntries
     * @param {number} opts.maxAgeMs
     * @param {number} opts.deliveredWaitMs how long an ACCEPTED attempt waits for sender:delivered
     * @param {boolean} opts.waitForDelivered
     * @param {(event: object) => void} opts.emit
     * @param {{evicted: number}} opts.counters
     */
    constructor(opts) {
        this.maxEntries = opts.maxEntries;
        this.maxAgeMs = opts.maxAgeMs;
        this.deliveredWaitMs = opts.deliveredWaitMs;
        this.waitForDelivered = opts.waitForDelivered;
        this.emit = opts.emit;
        this.counters = opts.counters;
        this.active = new Map(); // insertion order == age order
        this.awaiting = new Map(); // ACCEPTED, waiting for sender:delivered
    }

    get size() {
        return this.active.size + this.awaiting.size;
    }

    _key(delivery) {
        if (!delivery || typeof delivery !== 'object') {
            return null;
        }
        const id = delivery.id;
        const seq = delivery.seq;
        if ((typeof id !== 'string' && typeof id !== 'number') || (typeof seq !== 'string' && typeof seq !== 'number')) {
            return null;
        }
        return id + '.' + seq;
    }

    _insert(key, delivery, now) {
        if (this.active.size >= this.maxEntries) {
            const oldest = this.active.keys().next().value;
            this.active.delete(oldest);
            this.counters.evicted++;
        }
        const rec = new Attempt(String(delivery.id), String(delivery.seq), now);
        this.active.set(key, rec);
        return rec;
    }

    _get(delivery, now) {
        const key = this._key(delivery);
        if (key === null) {
            return null;
        }
        return this.active.get(key) || this._insert(key, delivery, now);
    }

    fetch(delivery, now) {
        const key = this._key(delivery);
        if (key === null) {
            return;
        }
        if (this.active.has(key)) {
            // a previous attempt never reported an outcome
            this.active.delete(key);
            this.counters.evicted++;
        }
        this._insert(key, delivery, now).fetchedAt = now;
    }

    connecting(delivery, now) {
        const rec = this._get(delivery, now);
        if (!rec) {
            return;
        }
        rec.tries++;
        rec.tryStart = now;
        if (!rec.connectStart) {
            rec.connectStart = now;
        }
    }

    connect(delivery, connOpts, now) {
        const rec = this._get(delivery, now);
        if (!rec) {
            return;
        }
        rec.ips++;
        rec.lastConnectAt = now;
        if (!rec.connectStart) {
            rec.connectStart = now;
        }
        if (connOpts && typeof connOpts === 'object') {
            rec.host = str(connOpts.host, 64) || rec.host;
            rec.port = Number(connOpts.port) || rec.port;
            rec.localAddress = str(connOpts.localAddress, 64) || rec.localAddress;
        }
    }

    tlsError(delivery, options, err, now) {
        const rec = this._get(delivery, now);
        if (!rec) {
            return;
        }
        // The failed try started with its TCP connect (or the try itself).
        const start = Math.max(rec.lastConnectAt, rec.tryStart) || now;
        if (!rec.tlsStart) {
            rec.tlsStart = start;
        }
        rec.tlsEnd = now;
        rec.tlsFailures++;
        rec.tlsError = errorLabel(err);
        if (options && typeof options === 'object') {
            rec.servername = str(options.servername, 255) || rec.servername;
            rec.host = str(options.host, 64) || rec.host;
        }
    }

    connected(delivery, options, secure, now) {
        const rec = this._get(delivery, now);
        if (!rec) {
            return;
        }
        rec.connectedAt = now;
        rec.secure = !!secure;
        if (options && typeof options === 'object') {
            rec.servername = str(options.servername, 255) || rec.servername;
            rec.host = str(options.host, 64) || rec.host;
            rec.port = Number(options.port) || rec.port;
            rec.localAddress = str(options.localAddress, 64) || rec.localAddress;
        }
    }

    connection(delivery, connection, now) {
        const rec = this._get(delivery, now);
        if (!rec) {
            return;
        }
        rec.readyAt = now;
        if (!rec.connectedAt && !rec.ips) {
            // a cached connection from the pool: no connect hooks ran
            rec.reused = true;
            if (!rec.connectStart) {
                rec.connectStart = now;
            }
            const o = connection && typeof connection === 'object' ? connection.options : null;
            if (o && typeof o === 'object') {
                rec.servername = str(o.servername, 255);
                rec.host = str(o.host, 64);
                rec.port = Number(o.port) || 0;
                rec.localAddress = str(o.localAddress, 64);
            }
            rec.secure = !!(connection && connection.secure);
        }
    }

    responseError(delivery, err, now) {
        const key = this._key(delivery);
        const rec = key === null ? null : this.active.get(key);
        if (!rec) {
            return;
        }
        rec.errorAt = now;
        rec.error = errorLabel(err);
    }

    /** A remote-log entry: the attempt's outcome when ACCEPTED/DEFERRED/REJECTED. */
    outcome(entry, now) {
        if (!OUTCOMES.has(entry.action)) {
            return;
        }
        const key = entry.id + '.' + entry.seq;
        const rec = this.active.get(key);
        if (!rec) {
            return;
        }
        this.active.delete(key);
        rec.action = entry.action;
        rec.defcount = entry.action === 'DEFERRED' ? Math.trunc(Number(entry.defcount)) || 0 : 0;
        rec.outcomeAt = now;
        if (rec.action === 'ACCEPTED' && this.waitForDelivered) {
            if (this.awaiting.size >= this.maxEntries) {
                const [oldestKey, oldest] = this.awaiting.entries().next().value;
                this.awaiting.delete(oldestKey);
                this._emit(oldest);
            }
            this.awaiting.set(key, rec);
            return;
        }
        this._emit(rec);
    }

    /** sender:delivered: nodemailer's envelope/data timings complete an ACCEPTED attempt. */
    delivered(delivery, info, now) {
        const key = this._key(delivery);
        if (key === null) {
            return;
        }
        let rec = this.awaiting.get(key);
        if (rec) {
            this.awaiting.delete(key);
        } else {
            rec = this.active.get(key);
            if (!rec) {
                return;
            }
            // no ACCEPTED entry seen (it always comes first in ZoneMTA)
            this.active.delete(key);
            rec.action = 'ACCEPTED';
            rec.outcomeAt = now;
        }
        if (info && typeof info === 'object') {
            if (Number.isFinite(info.envelopeTime)) {
                rec.envelopeMs = info.envelopeTime;
            }
            if (Number.isFinite(info.messageTime)) {
                rec.dataMs = info.messageTime;
            }
        }
        this._emit(rec);
    }

    /** Emit ACCEPTED attempts whose sender:delivered never came; evict stale records. */
    sweep(now) {
        for (const [key, rec] of this.awaiting) {
            if (now - rec.outcomeAt < this.deliveredWaitMs) {
                break;
            }
            this.awaiting.delete(key);
            this._emit(rec);
        }
        for (const [key, rec] of this.active) {
            if (now - rec.created < this.maxAgeMs) {
                break;
            }
            this.active.delete(key);
            this.counters.evicted++;
        }
    }

    _emit(rec) {
        const phases = buildPhases(rec);
        if (!phases.length) {
            return;
        }
        const event = {
            id: '',
            type: 'delivery.phases',
            time_ms: rec.outcomeAt,
            queue_id: rec.queueId,
            seq: rec.seq,
            action: rec.action,
            defcount: rec.defcount,
            attempt_start_ms: rec.fetchedAt || undefined,
            phases
        };
        this.emit(event);
    }
}

function buildPhases(rec) {
    const phases = [];
    const failEnd = rec.errorAt || rec.outcomeAt;

    if (rec.connectStart) {
        const attributes = {};
        if (rec.servername) {
            attributes['server.address'] = rec.servername;
        }
        if (rec.port) {
            attributes['server.port'] = rec.port;
        }
        if (rec.host) {
            attributes['network.peer.address'] = rec.host;
        }
        if (rec.localAddress) {
            attributes['network.local.address'] = rec.localAddress;
        }
        attributes['mta.connect.tries'] = rec.tries;
        attributes['mta.connect.addresses'] = rec.ips;
        attributes['mta.connection.reused'] = rec.reused;
        if (rec.readyAt) {
            attributes['tls.established'] = rec.secure;
        }
        const phase = {
            name: 'connect',
            start_ms: rec.connectStart,
            end_ms: Math.max(rec.connectStart, rec.readyAt || failEnd),
            attributes
        };
        if (!rec.readyAt) {
            phase.error = rec.error || 'connect_failed';
        }
        phases.push(phase);
    }

    if (rec.tlsFailures) {
        const attributes = { 'mta.tls.failures': rec.tlsFailures };
        if (rec.servername) {
            attributes['server.address'] = rec.servername;
        }
        phases.push({
            name: 'tls',
            start_ms: rec.tlsStart,
            end_ms: Math.max(rec.tlsStart, rec.tlsEnd),
            error: rec.tlsError,
            attributes
        });
    }

    if (rec.readyAt) {
        const attributes = {};
        if (rec.envelopeMs >= 0) {
            attributes['mta.smtp.envelope_ms'] = rec.envelopeMs;
        }
        if (rec.dataMs >= 0) {
            attributes['mta.smtp.data_ms'] = rec.dataMs;
        }
        const phase = {
            name: 'smtp',
            start_ms: rec.readyAt,
            end_ms: Math.max(rec.readyAt, rec.action === 'ACCEPTED' ? rec.outcomeAt : failEnd),
            attributes
        };
        if (rec.action !== 'ACCEPTED') {
            phase.error = rec.error || rec.action.toLowerCase();
        }
        phases.push(phase);
    }
    return phases;
}

module.exports = { PhaseTracker, errorLabel, OUTCOMES };
