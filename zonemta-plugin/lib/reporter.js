'use strict';

// Buffer and transport: hooks add() events into a bounded ring buffer; a timer
// sends them as gzip-compressed JSON batches to the sidecar's /v1/events over
// a keep-alive connection, one batch in flight at a time, retrying with
// exponential backoff and full jitter. Every loss is counted.
//
// A request that times out may still be processed (the sidecar drops the
// repeated ids), so each timeout of a batch doubles the next attempt's
// timeout (up to MAX_TIMEOUT_MS): a sidecar that needs longer than
// requestTimeoutMs for a batch gets it, instead of redoing the work on every
// retry until the batch is dropped.
//
// The same file is in zonemta-plugin/lib and haraka-plugin/lib (each plugin
// is installed on its own, without dependencies); tests/test_plugins_shared.py
// keeps the copies identical.

const http = require('http');
const https = require('https');
const zlib = require('zlib');
const crypto = require('crypto');
const RingBuffer = require('./ring-buffer');

const SCHEMA = 'otel-mta.events/v1';
const MAX_TIMEOUT_MS = 120000; // the largest requestTimeoutMs config.js accepts

function retryable(status) {
    return status === 408 || status === 429 || status >= 500;
}

// Retry-After in ms (seconds or an HTTP date), or 0.
function retryAfterMs(value) {
    if (!value) {
        return 0;
    }
    const secs = Number(value);
    if (Number.isFinite(secs)) {
        return Math.max(0, secs * 1000);
    }
    const at = Date.parse(value);
    return Number.isFinite(at) ? Math.max(0, at - Date.now()) : 0;
}

class Reporter {
    /**
     * @param {object} opts
     * @param {object} opts.cfg settings from config.load()
     * @param {object} opts.source the batch `source` object
     * @param {object} [opts.logger] npmlog-like logger
     * @param {string} [opts.logPrefix]
     * @param {string} [opts.schema] the batch `schema` (default otel-mta.events/v1)
     */
    constructor(opts) {
        this.cfg = opts.cfg;
        this.logger = opts.logger || null;
        this.logPrefix = opts.logPrefix || 'OTelMTA';
        this.ring = new RingBuffer(this.cfg.bufferSize);
        this.counters = { sent: 0, failed: 0, retries: 0, evicted: 0, hook_errors: 0 };
        this.batchHead = `{"schema":"${opts.schema || SCHEMA}","source":${JSON.stringify(opts.source)},"events":[`;

        // Event ids: a random per-instance prefix and a counter. Unique across
        // processes and restarts, and cheaper than a UUID per event.
        this.idPrefix = crypto.randomBytes(9).toString('base64url') + '.';
        this.idCounter = 0;

        const mod = this.cfg.url.protocol === 'https:' ? https : http;
        this.httpModule = mod;
        this.agent = new mod.Agent({ keepAlive: true, maxSockets: 1 });
        this.headers = {
            'Content-Type': 'application/json',
            'Content-Encoding': 'gzip',
            'User-Agent': opts.userAgent || 'otel-mta-plugin'
        };
        if (this.cfg.apiKey) {
            this.headers['X-Api-Key'] = this.cfg.apiKey;
        }

        this.inFlight = null; // {body, count, attempts}
        this.flushScheduled = false;
        this.retryTimer = null;
        this.closed = false;
        this.drainDeadline = 0;
        this.idleWaiters = [];
        this.lastLog = new Map();
        this.onTick = null; // extra work on every flush tick (phase sweeping)
        this.flushTimer = null;
        this.healthTimer = null;
    }

    start() {
        this.flushTimer = setInterval(() => this._tick(), this.cfg.flushIntervalMs);
        this.flushTimer.unref();
        this.healthTimer = setInterval(() => this.addHealth(), this.cfg.healthIntervalMs);
        this.healthTimer.unref();
    }

    /** Called from hooks: O(1), never throws for a well-formed event. */
    add(event) {
        this.ring.push(event);
        if (this.ring.length >= this.cfg.maxBatch && !this.flushScheduled && !this.inFlight && !this.closed) {
            this.flushScheduled = true;
            setImmediate(() => {
                this.flushScheduled = false;
                this.flush();
            });
        }
    }

    stats() {
        return {
            buffered: this.ring.length + (this.inFlight ? this.inFlight.count : 0),
            dropped: this.ring.dropped,
            sent: this.counters.sent,
            failed: this.counters.failed,
            retries: this.counters.retries,
            evicted: this.counters.evicted,
            hook_errors: this.counters.hook_errors
        };
    }

    addHealth() {
        try {
            this.add(Object.assign({ id: '', type: 'plugin.health', time_ms: Date.now() }, this.stats()));
        } catch (err) {
            this.counters.hook_errors++;
        }
    }

    _tick() {
        try {
            if (this.onTick) {
                this.onTick(Date.now());
            }
            this.flush();
        } catch (err) {
            this.counters.hook_errors++;
            this.warn('tick', 'flush failed: %s', err && err.message ? err.message : String(err));
        }
    }

    // Takes up to maxBatch events (and about maxBatchBytes of JSON) off the
    // buffer. An event JSON.stringify cannot encode is dropped and counted.
    _takeBatch() {
        const parts = [];
        let size = this.batchHead.length + 2;
        while (parts.length < this.cfg.maxBatch && this.ring.length) {
            const event = this.ring.peek();
            let json;
            try {
                event.id = this.idPrefix + (this.idCounter++).toString(36);
                json = JSON.stringify(event);
            } catch (err) {
                this.ring.shift();
                this.counters.failed++;
                this.warn('encode', 'dropped an event that cannot be encoded as JSON: %s', err.message);
                continue;
            }
            if (size + json.length + 1 > this.cfg.maxBatchBytes) {
                if (parts.length) {
                    break; // next batch
                }
                this.ring.shift();
                this.counters.failed++;
                this.warn('encode', 'dropped a %s event of %s bytes (maxBatchBytes %s)', event.type, json.length, this.cfg.maxBatchBytes);
                continue;
            }
            this.ring.shift();
            parts.push(json);
            size += json.length + 1;
        }
        if (!parts.length) {
            return null;
        }
        return { json: this.batchHead + parts.join(',') + ']}', count: parts.length };
    }

    /** Sends the next batch unless one is in flight. */
    flush() {
        if (this.inFlight || this.closed) {
            return;
        }
        const batch = this._takeBatch();
        if (!batch) {
            this._notifyIdle();
            return;
        }
        const inFlight = { body: null, count: batch.count, attempts: 0, timeouts: 0 };
        this.inFlight = inFlight;
        zlib.gzip(batch.json, { level: 1 }, (err, body) => {
            if (err) {
                this.counters.failed += inFlight.count;
                this.inFlight = null;
                this.warn('gzip', 'gzip failed: %s', err.message);
                return this._next();
            }
            inFlight.body = body;
            this._attempt(inFlight);
        });
    }

    _attempt(batch) {
        const timeoutMs = Math.min(MAX_TIMEOUT_MS, this.cfg.requestTimeoutMs * 2 ** batch.timeouts);
        this._post(batch.body, timeoutMs, (err, status, retryAfter) => {
            if (this.closed) {
                return;
            }
            if (!err && status >= 200 && status < 300) {
                this.counters.sent += batch.count;
                this.inFlight = null;
                return this._next();
            }
            const why = err ? err.code || err.message : `HTTP ${status}`;
            if (err && err.timedOut) {
                batch.timeouts++;
            }
            if ((err || retryable(status)) && batch.attempts < this.cfg.maxRetries) {
                let delay = this._backoff(batch.attempts, retryAfter);
                if (this.drainDeadline) {
                    const left = this.drainDeadline - Date.now();
                    if (left <= 0) {
                        return this._giveUp(batch, `${why}, shutdown deadline reached`);
                    }
                    delay = Math.min(delay, left);
                }
                batch.attempts++;
                this.counters.retries++;
                this.warn('retry', 'sidecar %s: %s, retrying in %s ms', this.cfg.url.origin, why, Math.round(delay));
                this.retryTimer = setTimeout(() => {
                    this.retryTimer = null;
                    this._attempt(batch);
                }, delay);
                this.retryTimer.unref();
                return;
            }
            this._giveUp(batch, err ? `${why} after ${batch.attempts} retries` : why);
        });
    }

    _giveUp(batch, why) {
        this.counters.failed += batch.count;
        this.inFlight = null;
        this.warn('failed', 'dropped a batch of %s events: %s', batch.count, why);
        this._next();
    }

    // Full jitter: uniform in [0, min(cap, base * 2^attempt)].
    _backoff(attempt, retryAfter) {
        const ceiling = Math.min(this.cfg.retryMaxMs, this.cfg.retryBaseMs * 2 ** attempt);
        const delay = Math.random() * ceiling;
        return Math.min(this.cfg.retryMaxMs, Math.max(delay, retryAfter || 0));
    }

    _next() {
        if (this.ring.length && (this.drainDeadline || this.ring.length >= this.cfg.maxBatch)) {
            setImmediate(() => this.flush());
        } else if (!this.ring.length) {
            this._notifyIdle();
        }
    }

    _post(body, timeoutMs, done) {
        let finished = false;
        const finish = (err, status, retryAfter) => {
            if (!finished) {
                finished = true;
                done(err, status, retryAfter);
            }
        };
        let req;
        try {
            req = this.httpModule.request(
                this.cfg.url,
                {
                    method: 'POST',
                    agent: this.agent,
                    headers: Object.assign({ 'Content-Length': body.length }, this.headers),
                    timeout: timeoutMs
                },
                res => {
                    const status = res.statusCode;
                    const after = status === 429 || status === 503 ? retryAfterMs(res.headers['retry-after']) : 0;
                    res.on('error', err => finish(err));
                    res.on('end', () => finish(null, status, after));
                    res.resume();
                }
            );
        } catch (err) {
            return setImmediate(() => finish(err));
        }
        req.on('timeout', () => req.destroy(Object.assign(new Error('request timed out'), { code: 'ETIMEDOUT', timedOut: true })));
        req.on('error', err => finish(err));
        req.end(body);
    }

    _notifyIdle() {
        if (!this.inFlight && !this.ring.length) {
            this._wakeWaiters();
        }
    }

    _wakeWaiters() {
        const waiters = this.idleWaiters;
        this.idleWaiters = [];
        waiters.forEach(fn => fn());
    }

    /**
     * Sends everything buffered, giving up after timeoutMs (retries are cut to
     * fit). Resolves true when the buffer is empty.
     */
    drain(timeoutMs) {
        if (this.closed) {
            return Promise.resolve(this.ring.length === 0);
        }
        this.drainDeadline = Date.now() + timeoutMs;
        return new Promise(resolve => {
            let timer = null;
            const done = () => {
                clearTimeout(timer);
                this.drainDeadline = 0;
                resolve(!this.inFlight && this.ring.length === 0);
            };
            // ref'd on purpose: a drain on shutdown must get its time
            timer = setTimeout(() => {
                this.idleWaiters = this.idleWaiters.filter(fn => fn !== done);
                done();
            }, timeoutMs);
            this.idleWaiters.push(done);
            if (this.retryTimer) {
                // do not sit out a long backoff while shutting down
                clearTimeout(this.retryTimer);
                this.retryTimer = null;
                this._attempt(this.inFlight);
            } else {
                this.flush();
                this._notifyIdle();
            }
        });
    }

    close() {
        this.closed = true;
        clearInterval(this.flushTimer);
        clearInterval(this.healthTimer);
        clearTimeout(this.retryTimer);
        this.agent.destroy();
        this._wakeWaiters();
    }

    // At most one line per kind per minute: a down sidecar must not flood the MTA log.
    warn(kind, fmt, ...args) {
        const now = Date.now();
        const last = this.lastLog.get(kind);
        if (last && now - last.at < 60000) {
            last.suppressed++;
            return;
        }
        const suppressed = last ? last.suppressed : 0;
        this.lastLog.set(kind, { at: now, suppressed: 0 });
        if (this.logger) {
            const log = typeof this.logger.warn === 'function' ? this.logger.warn : this.logger.info;
            try {
                log.call(this.logger, this.logPrefix, fmt + (suppressed ? ` (+${suppressed} similar)` : ''), ...args);
            } catch (err) {
                // a logger must not break delivery reporting
            }
        }
    }
}

module.exports = { Reporter, SCHEMA, retryable, retryAfterMs };
