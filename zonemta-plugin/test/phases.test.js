'use strict';

// Per-delivery phase timing in the sender context: hooks run through the real
// host in the order lib/sender.js runs them; the outcome comes from
// remotelog(), which runs log:entry exactly as in ZoneMTA.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');
const { PhaseTracker } = require('../lib/phases');
const ids = require('../lib/trace-ids');

const plugin = require('..');

const sleep = ms => new Promise(r => setTimeout(r, ms));

async function sender(config) {
    const sidecar = await h.startSidecar();
    const loaded = await h.loadPlugin('sender', Object.assign({ url: sidecar.url, flushIntervalMs: 20 }, config));
    return Object.assign(loaded, { sidecar });
}

async function finish(ctx) {
    plugin.closeAll();
    await ctx.sidecar.close();
}

function phasesEvents(sidecar) {
    return sidecar.events().filter(e => e.type === 'delivery.phases');
}

// lib/sender.js, a new connection: fetch, connecting, connect (per MX IP),
// connected, connection (after AUTH), headers, ACCEPTED log, delivered.
async function deliverOk(handler, delivery, { secure = true } = {}) {
    await h.runHooks(handler, 'sender:fetch', [delivery]);
    await sleep(3);
    handler.runHooks('sender:connecting', [delivery], () => false);
    await h.runHooks(handler, 'sender:connect', [delivery, h.connectOptions()]);
    await sleep(5);
    const connection = h.smtpConnection(secure);
    handler.runHooks('sender:connected', [delivery, connection, h.smtpOptions(), secure], () => false);
    await h.runHooks(handler, 'sender:connection', [delivery, connection]);
    await h.runHooks(handler, 'sender:headers', [delivery, connection]);
    await sleep(5);
    handler.remotelog(delivery.id, delivery.seq, 'ACCEPTED', h.acceptedData(delivery));
    await h.runHooks(handler, 'sender:delivered', [delivery, h.sendInfo(delivery)]);
}

test('an accepted delivery: connect and smtp phases with nodemailer timings', async () => {
    const ctx = await sender();
    try {
        const delivery = h.senderDelivery();
        const t0 = Date.now();
        await deliverOk(ctx.handler, delivery);
        const [ev] = await h.waitFor(() => phasesEvents(ctx.sidecar).length && phasesEvents(ctx.sidecar));
        assert.equal(ev.queue_id, '18c5f3d2a3e0001234');
        assert.equal(ev.seq, '001');
        assert.equal(ev.action, 'ACCEPTED');
        assert.equal(ev.defcount, 0);
        assert.ok(ev.attempt_start_ms >= t0);
        const [connect, smtp] = ev.phases;
        assert.equal(connect.name, 'connect');
        assert.equal(smtp.name, 'smtp');
        assert.ok(connect.start_ms >= ev.attempt_start_ms + 2, 'connecting comes after the fetch');
        assert.ok(connect.end_ms - connect.start_ms >= 4, 'connect covers the TCP/SMTP handshake');
        assert.ok(smtp.start_ms >= connect.end_ms);
        assert.ok(smtp.end_ms - smtp.start_ms >= 4);
        assert.ok(smtp.end_ms <= ev.time_ms);
        assert.equal(connect.error, undefined);
        assert.equal(smtp.error, undefined);
        assert.deepEqual(connect.attributes, {
            'server.address': 'mx.example.net',
            'server.port': 25,
            'network.peer.address': '198.51.100.25',
            'network.local.address': '192.0.2.10',
            'mta.connect.tries': 1,
            'mta.connect.addresses': 1,
            'mta.connection.reused': false,
            'tls.established': true
        });
        assert.deepEqual(smtp.attributes, { 'mta.smtp.envelope_ms': 12, 'mta.smtp.data_ms': 40 });
        ctx.sidecar.batches.forEach(h.assertValid);

        // the same ACCEPTED entry is also reported as log.entry; the sidecar derives
        // the attempt span from it and hangs the phases below
        const entry = ctx.sidecar.events().find(e => e.type === 'log.entry');
        assert.equal(entry.entry.action, 'ACCEPTED');
    } finally {
        await finish(ctx);
    }
});

test('deferred after a STARTTLS failure: tls phase, smtp error, defcount', async () => {
    const ctx = await sender();
    try {
        const { handler } = ctx;
        const delivery = h.senderDelivery({ _deferred: { count: 1 } });
        await h.runHooks(handler, 'sender:fetch', [delivery]);
        handler.runHooks('sender:connecting', [delivery], () => false);
        await h.runHooks(handler, 'sender:connect', [delivery, h.connectOptions()]);
        await sleep(3);
        const tlsErr = Object.assign(new Error('Client network socket disconnected before secure TLS connection was established'), { code: 'ETLS' });
        handler.runHooks('sender:tlserror', [delivery, h.smtpOptions(), tlsErr], () => false);
        // tryConnect() again, without TLS
        handler.runHooks('sender:connecting', [delivery], () => false);
        await h.runHooks(handler, 'sender:connect', [delivery, h.connectOptions()]);
        const connection = h.smtpConnection(false);
        handler.runHooks('sender:connected', [delivery, connection, h.smtpOptions(), false], () => false);
        await h.runHooks(handler, 'sender:connection', [delivery, connection]);
        await sleep(3);
        const smtpErr = Object.assign(new Error('Message failed: 421 4.7.0 Try again later'), { code: 'EMESSAGE', responseCode: 421, response: '421 4.7.0 Try again later' });
        await h.runHooks(handler, 'sender:responseError', [delivery, connection, smtpErr]);
        handler.remotelog(delivery.id, delivery.seq, 'DEFERRED', h.deferredData(delivery, 2, true));

        const [ev] = await h.waitFor(() => phasesEvents(ctx.sidecar).length && phasesEvents(ctx.sidecar));
        assert.equal(ev.action, 'DEFERRED');
        assert.equal(ev.defcount, 2);
        const byName = Object.fromEntries(ev.phases.map(p => [p.name, p]));
        assert.deepEqual(Object.keys(byName).sort(), ['connect', 'smtp', 'tls']);
        assert.equal(byName.connect.attributes['mta.connect.tries'], 2);
        assert.equal(byName.connect.attributes['mta.connect.addresses'], 2);
        assert.equal(byName.connect.attributes['tls.established'], false);
        assert.equal(byName.connect.error, undefined);
        assert.equal(byName.tls.error, 'ETLS');
        assert.equal(byName.tls.attributes['mta.tls.failures'], 1);
        assert.ok(byName.tls.end_ms - byName.tls.start_ms >= 2);
        assert.equal(byName.smtp.error, 'EMESSAGE');
        assert.ok(!JSON.stringify(ev).includes('Try again'), 'no SMTP response text in phases');
        ctx.sidecar.batches.forEach(h.assertValid);

        // span ids the sidecar will derive for these phases are distinct
        const attempt = ids.attemptSpanId(ev.queue_id, ev.seq, ev.action, ev.defcount);
        const spanIds = new Set(ev.phases.map(p => ids.phaseSpanId(attempt, p.name)));
        assert.equal(spanIds.size, 3);
    } finally {
        await finish(ctx);
    }
});

test('no connection at all: a failed connect phase only', async () => {
    const ctx = await sender();
    try {
        const { handler } = ctx;
        const delivery = h.senderDelivery({ seq: '002' });
        await h.runHooks(handler, 'sender:fetch', [delivery]);
        handler.runHooks('sender:connecting', [delivery], () => false);
        await h.runHooks(handler, 'sender:connect', [delivery, h.connectOptions()]);
        await sleep(3);
        const err = Object.assign(new Error('connect ECONNREFUSED 198.51.100.25:25'), { code: 'ECONNREFUSED', category: 'network', temporary: true });
        await h.runHooks(handler, 'sender:responseError', [delivery, false, err]);
        handler.remotelog(delivery.id, delivery.seq, 'DEFERRED', h.deferredData(delivery, 1, false));

        const [ev] = await h.waitFor(() => phasesEvents(ctx.sidecar).length && phasesEvents(ctx.sidecar));
        assert.equal(ev.phases.length, 1);
        const [connect] = ev.phases;
        assert.equal(connect.name, 'connect');
        assert.equal(connect.error, 'ECONNREFUSED');
        assert.ok(connect.end_ms - connect.start_ms >= 2);
        assert.equal(connect.attributes['tls.established'], undefined);
        ctx.sidecar.batches.forEach(h.assertValid);
    } finally {
        await finish(ctx);
    }
});

test('a pooled connection is reported as reused', async () => {
    const ctx = await sender();
    try {
        const { handler } = ctx;
        const delivery = h.senderDelivery({ seq: '003' });
        await h.runHooks(handler, 'sender:fetch', [delivery]);
        // CONNREUSE: connecting, then straight to sender:connection
        handler.runHooks('sender:connecting', [delivery], () => false);
        const connection = h.smtpConnection(true);
        await h.runHooks(handler, 'sender:connection', [delivery, connection]);
        handler.remotelog(delivery.id, delivery.seq, 'ACCEPTED', h.acceptedData(delivery));
        await h.runHooks(handler, 'sender:delivered', [delivery, h.sendInfo(delivery)]);

        const [ev] = await h.waitFor(() => phasesEvents(ctx.sidecar).length && phasesEvents(ctx.sidecar));
        const connect = ev.phases.find(p => p.name === 'connect');
        assert.equal(connect.attributes['mta.connection.reused'], true);
        assert.equal(connect.attributes['mta.connect.addresses'], 0);
        assert.equal(connect.attributes['server.address'], 'mx.example.net');
        assert.equal(connect.attributes['tls.established'], true);
    } finally {
        await finish(ctx);
    }
});

test('ACCEPTED without sender:delivered is still emitted after deliveredWaitMs', async () => {
    const ctx = await sender({ deliveredWaitMs: 50 });
    try {
        const { handler } = ctx;
        const delivery = h.senderDelivery({ seq: '004' });
        await h.runHooks(handler, 'sender:fetch', [delivery]);
        handler.runHooks('sender:connecting', [delivery], () => false);
        const connection = h.smtpConnection(true);
        await h.runHooks(handler, 'sender:connection', [delivery, connection]);
        handler.remotelog(delivery.id, delivery.seq, 'ACCEPTED', h.acceptedData(delivery));
        // releaseDelivery failed: sender:delivered never runs
        await sleep(20);
        assert.equal(phasesEvents(ctx.sidecar).length, 0, 'waits for sender:delivered first');
        const [ev] = await h.waitFor(() => phasesEvents(ctx.sidecar).length && phasesEvents(ctx.sidecar), 2000);
        const smtp = ev.phases.find(p => p.name === 'smtp');
        assert.deepEqual(smtp.attributes, {});
        assert.equal(ctx.reporter.counters.evicted, 0);
    } finally {
        await finish(ctx);
    }
});

test('the phase map is bounded: the oldest records are evicted and counted', async () => {
    const ctx = await sender({ phaseMapSize: 10 });
    try {
        const { handler } = ctx;
        for (let i = 0; i < 25; i++) {
            const delivery = h.senderDelivery({ seq: i.toString(16).padStart(3, '0') });
            await h.runHooks(handler, 'sender:fetch', [delivery]);
            handler.runHooks('sender:connecting', [delivery], () => false);
        }
        assert.equal(ctx.reporter.counters.evicted, 15);
        // the newest still report, the evicted do not
        const newest = h.senderDelivery({ seq: (24).toString(16).padStart(3, '0') });
        const oldest = h.senderDelivery({ seq: '000' });
        handler.remotelog(oldest.id, oldest.seq, 'DEFERRED', h.deferredData(oldest, 1, false));
        handler.remotelog(newest.id, newest.seq, 'DEFERRED', h.deferredData(newest, 1, false));
        const events = await h.waitFor(() => phasesEvents(ctx.sidecar).length && phasesEvents(ctx.sidecar));
        await sleep(50);
        assert.deepEqual(phasesEvents(ctx.sidecar).map(e => e.seq), ['018']);
        assert.equal(events.length, 1);
        ctx.reporter.addHealth();
        const health = await h.waitFor(() => ctx.sidecar.events().find(e => e.type === 'plugin.health'));
        assert.equal(health.evicted, 15);
    } finally {
        await finish(ctx);
    }
});

test('PhaseTracker evicts records older than maxAgeMs on sweep', () => {
    const emitted = [];
    const counters = { evicted: 0 };
    const tracker = new PhaseTracker({ maxEntries: 100, maxAgeMs: 1000, deliveredWaitMs: 100, waitForDelivered: true, emit: e => emitted.push(e), counters });
    tracker.fetch({ id: 'q', seq: '001' }, 10000);
    tracker.connecting({ id: 'q', seq: '001' }, 10001);
    tracker.fetch({ id: 'q', seq: '002' }, 10500);
    tracker.sweep(10999);
    assert.equal(tracker.size, 2);
    tracker.sweep(11000);
    assert.equal(tracker.size, 1);
    assert.equal(counters.evicted, 1);
    tracker.sweep(11500);
    assert.equal(tracker.size, 0);
    assert.equal(counters.evicted, 2);
    assert.equal(emitted.length, 0);
    // a late outcome for an evicted record is ignored
    tracker.outcome({ id: 'q', seq: '001', action: 'DEFERRED', defcount: 1 }, 12000);
    assert.equal(emitted.length, 0);
});

test('traceHeader adds traceparent in sender:headers, before DKIM signing', async () => {
    const ctx = await sender({ traceHeader: true });
    try {
        const { handler } = ctx;
        assert.ok(handler.hooks.has('sender:headers'));
        const delivery = h.senderDelivery();
        const connection = h.smtpConnection(true);
        assert.equal(await h.runHooks(handler, 'sender:headers', [delivery, connection]), undefined);
        const expected = ids.traceparent('<20261126173700.1234@Example.COM>', '18c5f3d2a3e0001234');
        assert.match(expected, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
        assert.equal(delivery.headers.getFirst('traceparent'), expected);
        assert.equal(delivery.headers.getFirst('x-otel-mta-trace'), expected);
        // what ZoneMTA signs and sends: Headers#build() right after this hook
        const built = delivery.headers.build().toString();
        assert.match(built, new RegExp(`^traceparent: ${expected}\\r\\n`, 'm'));
        assert.match(built, /^Message-ID: <20261126173700\.1234@Example\.COM>\r\n/m);

        // a sending application's own traceparent is kept; ours is in X-OTel-MTA-Trace only
        const other = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
        const d2 = h.senderDelivery({ id: '1a2b3c4d5e6f000001' });
        d2.headers.add('traceparent', other);
        await h.runHooks(handler, 'sender:headers', [d2, connection]);
        assert.deepEqual(d2.headers.get('traceparent').length, 1);
        assert.equal(d2.headers.getFirst('traceparent'), other);
        assert.equal(d2.headers.getFirst('x-otel-mta-trace'), ids.traceparent('<20261126173700.1234@Example.COM>', '1a2b3c4d5e6f000001'));
        // a retried attempt does not stack headers
        await h.runHooks(handler, 'sender:headers', [d2, connection]);
        assert.equal(d2.headers.get('x-otel-mta-trace').length, 1);
    } finally {
        await finish(ctx);
    }
});
