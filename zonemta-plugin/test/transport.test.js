'use strict';

// Transport against a local HTTP server standing in for the sidecar:
// batching, gzip, API key, keep-alive, event ids, retries, bounds, recovery.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');
const { Reporter } = require('../lib/reporter');
const configLib = require('../lib/config');

const plugin = require('..');

const sleep = ms => new Promise(r => setTimeout(r, ms));

test.afterEach(() => plugin.closeAll());

// Each entry as remotelog() makes it in a receiver: one log.entry event.
function logEntries(handler, n, start) {
    for (let i = 0; i < n; i++) {
        handler.remotelog('18c5f3d2a3e0' + String((start || 0) + i).padStart(6, '0'), false, 'QUEUED', {
            'message-id': `<${i}@example.com>`,
            from: 'sender@example.com',
            to: 'rcpt@example.net',
            src: '203.0.113.5',
            subject: 'Hello',
            body: 1000 + i,
            interface: 'feeder'
        });
    }
}

const queueIds = events => events.map(e => e.entry.id);
const expectIds = (n, start) => Array.from({ length: n }, (_, i) => '18c5f3d2a3e0' + String((start || 0) + i).padStart(6, '0'));

test('a full batch is sent at once; order kept, ids unique, gzip, API key, one keep-alive connection', async () => {
    const sidecar = await h.startSidecar();
    try {
        // no flush tick during this test: only the size trigger sends
        const { handler, reporter } = await h.loadPlugin('receiver', { url: sidecar.url, maxBatch: 5, flushIntervalMs: 60000, apiKey: 's3cret' });
        logEntries(handler, 12);
        await h.waitFor(() => reporter.counters.sent === 10, 3000, 'two full batches');
        await sleep(100);
        assert.equal(reporter.counters.sent, 10, 'a partial batch waits');
        assert.equal(reporter.ring.length, 2);
        await plugin.drainAll(2000);
        assert.deepEqual(sidecar.batches.map(b => b.events.length), [5, 5, 2]);

        const events = sidecar.events();
        assert.deepEqual(queueIds(events), expectIds(12));
        assert.equal(new Set(events.map(e => e.id)).size, 12);
        for (const req of sidecar.requests) {
            assert.equal(req.headers['content-encoding'], 'gzip');
            assert.equal(req.headers['x-api-key'], 's3cret');
            assert.ok(req.rawLength < JSON.stringify(req.batch).length, 'body is compressed');
        }
        assert.equal(sidecar.sockets.size, 1, 'one keep-alive connection for all batches');
        assert.deepEqual(reporter.stats(), { buffered: 0, dropped: 0, sent: 12, failed: 0, retries: 0, evicted: 0, hook_errors: 0 });
    } finally {
        plugin.closeAll();
        await sidecar.close();
    }
});

test('a partial batch is sent on the flush interval', async () => {
    const sidecar = await h.startSidecar();
    try {
        const { handler, reporter } = await h.loadPlugin('receiver', { url: sidecar.url, maxBatch: 1000, flushIntervalMs: 100 });
        logEntries(handler, 3);
        await h.waitFor(() => reporter.counters.sent === 3, 5000, 'the flush tick');
        assert.deepEqual(sidecar.batches.map(b => b.events.length), [3]);
    } finally {
        plugin.closeAll();
        await sidecar.close();
    }
});

test('500 and 429: retried with the same body and ids, so the sidecar can drop duplicates', async () => {
    const answers = [500, { status: 429, headers: { 'Retry-After': '0.2' } }, 200];
    const seen = [];
    const sidecar = await h.startSidecar({
        respond: (req, batch, n) => {
            seen.push({ at: Date.now(), ids: batch.events.map(e => e.id) });
            return answers[n] || 200;
        }
    });
    try {
        const { handler, reporter } = await h.loadPlugin('receiver', { url: sidecar.url, flushIntervalMs: 20, retryBaseMs: 1, retryMaxMs: 5000 });
        logEntries(handler, 3);
        await h.waitFor(() => reporter.counters.sent === 3, 3000);
        assert.equal(seen.length, 3);
        assert.deepEqual(seen[1].ids, seen[0].ids);
        assert.deepEqual(seen[2].ids, seen[0].ids);
        assert.ok(seen[2].at - seen[1].at >= 180, `Retry-After honoured (${seen[2].at - seen[1].at} ms)`);
        assert.equal(reporter.counters.retries, 2);
        assert.equal(reporter.counters.sent, 3);
        assert.equal(reporter.counters.failed, 0);
    } finally {
        plugin.closeAll();
        await sidecar.close();
    }
});

test('400, 401 and 413 drop the batch without retrying, counted; later batches go on', async () => {
    const answers = [400, 401, 413];
    const sidecar = await h.startSidecar({ respond: (req, batch, n) => answers[n] || 200 });
    try {
        const { handler, reporter } = await h.loadPlugin('receiver', { url: sidecar.url, flushIntervalMs: 20, maxBatch: 2, retryBaseMs: 1 });
        logEntries(handler, 8);
        await h.waitFor(() => reporter.counters.sent === 2, 3000);
        assert.equal(sidecar.requests.length, 4, 'no retries');
        assert.equal(reporter.counters.failed, 6);
        assert.equal(reporter.counters.retries, 0);
        assert.deepEqual(queueIds(sidecar.events()), expectIds(2, 6));
        assert.ok(h.quietLogger && true);
    } finally {
        plugin.closeAll();
        await sidecar.close();
    }
});

test('sidecar down: hooks stay fast, the buffer stays bounded, drops are counted, recovery when it is back', async () => {
    let sidecar = await h.startSidecar();
    const port = sidecar.port;
    await sidecar.close(); // down
    const { handler, reporter, logger } = await h.loadPlugin('receiver', {
        url: `http://127.0.0.1:${port}`,
        bufferSize: 50,
        maxBatch: 10,
        flushIntervalMs: 20,
        retryBaseMs: 5,
        retryMaxMs: 40,
        maxRetries: 1000
    });
    try {
        // 200 entries, ten per event-loop turn, as a busy MTA would make them
        let spent = 0n;
        for (let i = 0; i < 20; i++) {
            const t0 = process.hrtime.bigint();
            logEntries(handler, 10, i * 10);
            spent += process.hrtime.bigint() - t0;
            await sleep(1);
        }
        const perCallUs = Number(spent) / 1000 / 200;
        assert.ok(perCallUs < 200, `remotelog + hook took ${perCallUs.toFixed(1)} us per call with the sidecar down`);

        await h.waitFor(() => reporter.counters.retries >= 3, 3000, 'retries');
        const s = reporter.stats();
        assert.equal(s.buffered, 60, 'bufferSize plus the one batch in flight');
        assert.equal(s.dropped, 140);
        assert.equal(s.sent, 0);
        assert.equal(s.failed, 0);
        assert.ok(logger.lines.filter(l => /retrying/.test(l.text)).length <= 2, 'retry warnings are rate limited');

        sidecar = await h.startSidecar({ port }); // back
        await h.waitFor(() => reporter.counters.sent === 60, 5000, 'recovery');
        const s2 = reporter.stats();
        assert.equal(s2.sent + s2.dropped + s2.failed + s2.buffered, 200, 'every event accounted for');
        // the batch in flight was the oldest ten; then the newest fifty survived
        assert.deepEqual(queueIds(sidecar.events()), expectIds(10, 0).concat(expectIds(50, 150)));
        sidecar.batches.forEach(h.assertValid);
    } finally {
        plugin.closeAll();
        await sidecar.close();
    }
});

test('slow sidecar: requests time out and are retried; duplicates carry the same ids', async () => {
    let slow = true;
    const sidecar = await h.startSidecar({ respond: () => (slow ? { status: 200, delayMs: 300 } : 200) });
    try {
        const { handler, reporter } = await h.loadPlugin('receiver', { url: sidecar.url, flushIntervalMs: 20, requestTimeoutMs: 100, retryBaseMs: 1, retryMaxMs: 20 });
        logEntries(handler, 4);
        // while the sidecar hangs, hooks still return at once
        const t0 = Date.now();
        const err = await h.runHooks(handler, 'log:entry', [{ id: 'q-slow', action: 'QUEUED' }]);
        assert.equal(err, undefined);
        assert.ok(Date.now() - t0 < 100, 'the hook did not wait for the sidecar');

        await h.waitFor(() => reporter.counters.retries >= 2, 3000, 'timeouts retried');
        slow = false;
        await h.waitFor(() => reporter.counters.sent === 5, 3000, 'delivered after the sidecar speeds up');
        const events = sidecar.events();
        const unique = new Map(events.map(e => [e.id, e]));
        assert.equal(unique.size, 5, 'five distinct events');
        assert.ok(events.length > 5, 'the slow answers were stored too: the sidecar must drop duplicates by id');
    } finally {
        plugin.closeAll();
        await sidecar.close();
    }
});

test('a sidecar slower than requestTimeoutMs on every request still gets the batch: each timeout doubles the next wait', async () => {
    // with a fixed 100 ms timeout every attempt would time out and the batch be dropped after maxRetries
    const sidecar = await h.startSidecar({ respond: () => ({ status: 200, delayMs: 250 }) });
    try {
        const { handler, reporter } = await h.loadPlugin('receiver', { url: sidecar.url, flushIntervalMs: 20, requestTimeoutMs: 100, maxRetries: 8, retryBaseMs: 1, retryMaxMs: 20 });
        logEntries(handler, 3);
        await h.waitFor(() => reporter.counters.sent + reporter.counters.failed === 3, 30000, 'the batch done');
        assert.equal(reporter.counters.failed, 0);
        assert.equal(reporter.counters.sent, 3);
        assert.ok(reporter.counters.retries >= 1, 'the first 100 ms attempt timed out');
        assert.equal(new Map(sidecar.events().map(e => [e.id, e])).size, 3, 'every attempt carried the same ids');
    } finally {
        plugin.closeAll();
        await sidecar.close();
    }
});

test('out of retries: the batch is dropped and counted, the next one is sent', async () => {
    let failing = true;
    const sidecar = await h.startSidecar({ respond: () => (failing ? 503 : 200) });
    try {
        const { handler, reporter } = await h.loadPlugin('receiver', { url: sidecar.url, flushIntervalMs: 20, maxBatch: 3, maxRetries: 2, retryBaseMs: 1, retryMaxMs: 5 });
        logEntries(handler, 3);
        await h.waitFor(() => reporter.counters.failed === 3, 3000);
        assert.equal(sidecar.requests.length, 3, 'one try and two retries');
        failing = false;
        logEntries(handler, 2, 3);
        await h.waitFor(() => reporter.counters.sent === 2, 3000);
        assert.deepEqual(queueIds(sidecar.events()), expectIds(2, 3));
    } finally {
        plugin.closeAll();
        await sidecar.close();
    }
});

test('maxBatchBytes splits batches; an event larger than the limit is dropped and counted', async () => {
    const sidecar = await h.startSidecar();
    try {
        const { handler, reporter } = await h.loadPlugin('receiver', { url: sidecar.url, flushIntervalMs: 20, maxBatchBytes: 2048 });
        logEntries(handler, 10);
        handler.remotelog('q-huge', false, 'QUEUED', { subject: 'x'.repeat(4000) });
        logEntries(handler, 1, 10);
        await h.waitFor(() => reporter.counters.sent === 11, 3000);
        assert.equal(reporter.counters.failed, 1);
        assert.ok(sidecar.batches.length >= 3, `${sidecar.batches.length} batches`);
        for (const req of sidecar.requests) {
            assert.ok(JSON.stringify(req.batch).length <= 2048);
        }
        assert.deepEqual(queueIds(sidecar.events()), expectIds(11));
    } finally {
        plugin.closeAll();
        await sidecar.close();
    }
});

test('backoff is exponential with full jitter and capped', () => {
    const cfg = configLib.load({ retryBaseMs: 100, retryMaxMs: 1000 });
    const r = new Reporter({ cfg, source: {} });
    try {
        for (const [attempt, ceiling] of [[0, 100], [1, 200], [3, 800], [4, 1000], [20, 1000]]) {
            const samples = Array.from({ length: 2000 }, () => r._backoff(attempt, 0));
            assert.ok(Math.min(...samples) >= 0);
            assert.ok(Math.max(...samples) <= ceiling);
            const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
            assert.ok(Math.abs(mean - ceiling / 2) < ceiling * 0.1, `attempt ${attempt}: mean ${mean} for ceiling ${ceiling}`);
        }
        assert.equal(r._backoff(0, 700), 700, 'Retry-After wins over a shorter jitter');
        assert.equal(r._backoff(0, 5000), 1000, 'but is capped');
    } finally {
        r.close();
    }
});

test('the ring buffer drops the oldest when full', () => {
    const RingBuffer = require('../lib/ring-buffer');
    const ring = new RingBuffer(3);
    for (let i = 0; i < 7; i++) {
        ring.push(i);
    }
    assert.equal(ring.dropped, 4);
    assert.deepEqual([ring.shift(), ring.shift()], [4, 5]);
    ring.push(7);
    ring.push(8);
    assert.equal(ring.dropped, 4);
    ring.push(9);
    assert.equal(ring.dropped, 5);
    assert.deepEqual([ring.shift(), ring.shift(), ring.shift(), ring.shift()], [7, 8, 9, undefined]);
});

test('url: a base URL gets /v1/events, a full one is kept', () => {
    assert.equal(configLib.load({ url: 'http://sidecar:9477' }).url.href, 'http://sidecar:9477/v1/events');
    assert.equal(configLib.load({ url: 'https://s.example/otel/' }).url.href, 'https://s.example/otel/v1/events');
    assert.equal(configLib.load({ url: 'http://s:1/v1/events' }).url.href, 'http://s:1/v1/events');
    assert.equal(configLib.load({}, { OTEL_MTA_EVENTS_API_KEY: 'from-env' }).apiKey, 'from-env');
    assert.equal(configLib.load({ apiKey: 'cfg' }, { OTEL_MTA_EVENTS_API_KEY: 'from-env' }).apiKey, 'cfg');
});

test('drain() sends everything buffered before resolving', async () => {
    const sidecar = await h.startSidecar();
    try {
        const { handler, reporter } = await h.loadPlugin('receiver', { url: sidecar.url, flushIntervalMs: 60000, maxBatch: 4 });
        logEntries(handler, 10);
        const ok = await plugin.drainAll(2000);
        assert.deepEqual(ok, [true]);
        assert.equal(reporter.counters.sent, 10);
        assert.deepEqual(queueIds(sidecar.events()), expectIds(10));
    } finally {
        plugin.closeAll();
        await sidecar.close();
    }
});
