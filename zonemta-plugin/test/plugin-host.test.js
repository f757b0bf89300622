'use strict';

// The plugin inside ZoneMTA's real plugin host (@zone-eu/wild-plugins), in
// each context, with hook arguments shaped as ZoneMTA builds them.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

const plugin = require('..');

test.afterEach(() => plugin.closeAll());

async function withSidecar(fn) {
    const sidecar = await h.startSidecar();
    try {
        await fn(sidecar);
    } finally {
        plugin.closeAll();
        await sidecar.close();
    }
}

test('loads by path in every context through the real host', async () => {
    for (const context of ['receiver', 'sender', 'main']) {
        const { handler, logger } = await h.loadPlugin(context, { url: 'http://127.0.0.1:9' });
        const loaded = handler.loaded.find(p => p.path === h.PLUGIN_PATH);
        assert.equal(loaded.title, 'OTel MTA');
        assert.ok(logger.lines.some(l => /Initialized OTel MTA/.test(l.text)), context);
        assert.ok(handler.hooks.has('log:entry'));
        assert.ok(handler.hooks.has('sender:fetch'));
        assert.ok(!handler.hooks.has('sender:headers'), 'traceHeader is off by default');
    }
});

test('is not loaded in a context it is not enabled for', async () => {
    await assert.rejects(h.loadPlugin('receiver', { enabled: 'sender' }), /plugin not loaded/);
});

test('log:entry: remotelog() entries reach the sidecar as log.entry, verbatim', () =>
    withSidecar(async sidecar => {
        const { handler } = await h.loadPlugin('receiver', { url: sidecar.url, flushIntervalMs: 20, apiKey: 'k3y' });
        const keys = {
            'message-id': '<20261126173700.1234@Example.COM>',
            from: 'sender@example.com',
            to: 'rcpt@example.net,other@example.org',
            src: '203.0.113.5',
            subject: 'Hello',
            body: 1234,
            md5: '0123456789ab',
            interface: 'feeder',
            originhost: 'client.example.com',
            transhost: 'client',
            transtype: 'ESMTPSA',
            user: 'sender',
            headerFrom: 'Sender <sender@example.com>',
            auth: undefined
        };
        const before = Date.now();
        handler.remotelog('18c5f3d2a3e0001234', false, 'QUEUED', keys);
        handler.remotelog('18c5f3d2a3e0001234', '001', 'DELETED', { reason: 'No pending recipients' });

        const events = await h.waitFor(() => {
            const ev = sidecar.events().filter(e => e.type === 'log.entry');
            return ev.length === 2 && ev;
        });
        const expected = Object.assign({ id: '18c5f3d2a3e0001234', action: 'QUEUED' }, keys);
        delete expected.auth; // undefined values are left out, as in a msgpack datagram
        assert.deepEqual(events[0].entry, expected);
        assert.deepEqual(events[1].entry, { id: '18c5f3d2a3e0001234', seq: '001', action: 'DELETED', reason: 'No pending recipients' });
        assert.ok(events[0].time_ms >= before && events[0].time_ms <= Date.now());
        assert.notEqual(events[0].id, events[1].id);

        const req = sidecar.requests[0];
        assert.equal(req.url, '/v1/events');
        assert.equal(req.headers['x-api-key'], 'k3y');
        assert.equal(req.headers['content-encoding'], 'gzip');
        assert.equal(req.headers['content-type'], 'application/json');
        const batch = sidecar.batches[0];
        h.assertValid(batch);
        assert.equal(batch.schema, 'otel-mta.events/v1');
        assert.equal(batch.source.service, 'zonemta');
        assert.equal(batch.source.context, 'receiver');
        assert.equal(batch.source.pid, process.pid);
        assert.equal(batch.source.plugin_version, require('../package.json').version);
    }));

test('message:headers and message:queue map the queue id to the Message-ID', () =>
    withSidecar(async sidecar => {
        const { handler } = await h.loadPlugin('receiver', { url: sidecar.url, flushIntervalMs: 20 });
        const { envelope, messageInfo } = h.receiverEnvelope();

        // as in lib/mail-drop.js, before core/default-headers has run: the header is there
        assert.equal(await h.runHooks(handler, 'message:headers', [envelope, messageInfo]), undefined);
        // core/default-headers sets envelope.messageId; bodySize comes from the DKIM body hash stream
        envelope.messageId = '<20261126173700.1234@Example.COM>';
        envelope.bodySize = 4321;
        assert.equal(await h.runHooks(handler, 'message:queue', [envelope, messageInfo]), undefined);

        const events = await h.waitFor(() => sidecar.events().length === 2 && sidecar.events());
        assert.deepEqual(
            events.map(e => [e.type, e.queue_id, e.message_id]),
            [
                ['message.headers', '18c5f3d2a3e0001234', '<20261126173700.1234@Example.COM>'],
                ['message.queue', '18c5f3d2a3e0001234', '<20261126173700.1234@Example.COM>']
            ]
        );
        assert.equal(events[1].size, 4321);
        assert.equal(events[1].recipients, 2);
        assert.equal(events[1].interface, 'feeder');
        for (const e of events) {
            assert.equal(JSON.stringify(e).includes('rcpt@example.net'), false, 'no recipient addresses');
            assert.equal(JSON.stringify(e).includes('Hello'), false, 'no subject');
        }
        sidecar.batches.forEach(h.assertValid);
    }));

test('main context: queue:release, queue:bounce and queue:delayed', () =>
    withSidecar(async sidecar => {
        const { handler } = await h.loadPlugin('main', { url: sidecar.url, flushIntervalMs: 20 });
        const zone = { name: 'default', pool: [], host: false };

        // lib/queue-server.js RELEASE: [client.zone, data] with data as sent by Sender#releaseDelivery
        const release = {
            cmd: 'RELEASE',
            id: '18c5f3d2a3e0001234',
            domain: 'example.net',
            to: 'rcpt@example.net',
            seq: '001',
            status: { delivered: true, ip: '192.0.2.10', mx: 'mx.example.net', response: '250 OK' },
            address: '192.0.2.10',
            _lock: 'lock',
            req: 7
        };
        assert.equal(await h.runHooks(handler, 'queue:release', [zone, release]), undefined);
        assert.equal(await h.runHooks(handler, 'queue:release', [zone, Object.assign({}, release, { seq: '002', status: undefined })]), undefined);

        // lib/queue-server.js BOUNCE: data from Sender#sendBounceMessage, headers made a Headers object
        const bounce = {
            cmd: 'BOUNCE',
            id: '18c5f3d2a3e0001234',
            sessionId: 'n3ku2gxhddz7xapn',
            zone: 'default',
            interface: 'feeder',
            from: 'sender@example.com',
            to: 'rcpt@example.net',
            seq: '003',
            headers: new h.Headers([]),
            address: '192.0.2.10',
            name: 'mta.example.com',
            mxHostname: 'mx.example.net',
            returnPath: 'sender@example.com',
            category: 'recipient',
            time: Date.now(),
            arrivalDate: new Date(),
            response: '550 5.1.1 No such user',
            fbl: undefined,
            req: 8
        };
        assert.equal(await h.runHooks(handler, 'queue:bounce', [bounce, { add() {} }]), undefined);

        // lib/mail-queue.js: Object.assign({}, deliveryEntry, responseData), maildrop, {first, prev, last}
        const now = Date.now();
        const delayed = {
            id: '18c5f3d2a3e0001234',
            seq: '004',
            sendingZone: 'default',
            recipient: 'rcpt@example.net',
            _deferred: { first: now - 3600000, last: now - 600000, count: 3 },
            headers: new h.Headers([]),
            envelope: { from: 'sender@example.com', to: 'rcpt@example.net' },
            cmd: 'DEFER',
            ttl: 1200000,
            response: '421 Try later',
            category: 'network',
            req: 9
        };
        assert.equal(
            await h.runHooks(handler, 'queue:delayed', [delayed, { add() {} }, { first: now - 3600000, prev: now - 600000, last: now }]),
            undefined
        );

        const events = await h.waitFor(() => sidecar.events().length === 4 && sidecar.events());
        const [r1, r2, b, d] = events;
        assert.deepEqual([r1.type, r1.queue_id, r1.seq, r1.zone, r1.status], ['queue.release', '18c5f3d2a3e0001234', '001', 'default', 'delivered']);
        assert.equal(r2.status, 'unknown');
        assert.deepEqual([b.type, b.seq, b.zone, b.category], ['queue.bounce', '003', 'default', 'recipient']);
        assert.deepEqual([d.type, d.seq, d.zone, d.category, d.first_ms, d.prev_ms, d.last_ms], ['queue.delayed', '004', 'default', 'network', now - 3600000, now - 600000, now]);
        assert.equal(JSON.stringify(events).includes('rcpt@example.net'), false, 'no recipient addresses');
        sidecar.batches.forEach(h.assertValid);
    }));

test('a hook whose internals throw still calls back without error, and the chain goes on', () =>
    withSidecar(async sidecar => {
        const { handler, reporter } = await h.loadPlugin('sender', { url: sidecar.url, flushIntervalMs: 20 });
        let laterHookRan = 0;
        // a plugin loaded after ours on the same hooks
        for (const name of ['sender:fetch', 'log:entry', 'message:headers', 'queue:release', 'sender:delivered']) {
            handler.addHook('Later plugin', name, (...args) => {
                laterHookRan++;
                args[args.length - 1]();
            });
        }
        const evil = () => {
            throw new Error('boom');
        };
        const trap = new Proxy({}, { get: evil, has: evil, ownKeys: evil, getOwnPropertyDescriptor: evil });
        const throwingDelivery = Object.defineProperty({}, 'id', { get: evil, enumerable: true });
        const throwingEnvelope = { id: 'q1', headers: { getFirst: evil } };

        assert.equal(await h.runHooks(handler, 'sender:fetch', [throwingDelivery]), undefined);
        assert.equal(await h.runHooks(handler, 'log:entry', [trap]), undefined);
        assert.equal(await h.runHooks(handler, 'message:headers', [throwingEnvelope, {}]), undefined);
        assert.equal(await h.runHooks(handler, 'queue:release', [trap, trap]), undefined);
        assert.equal(await h.runHooks(handler, 'sender:delivered', [throwingDelivery, trap]), undefined);
        // the promise form of runHooks resolves too
        await handler.runHooks('sender:fetch', [throwingDelivery]);
        assert.equal(laterHookRan, 6);
        assert.equal(reporter.counters.hook_errors, 6);

        // an entry JSON cannot encode (a BigInt) is dropped at send time and counted; the rest goes through
        handler.remotelog('q1', '001', 'ACCEPTED', { size: 10n });
        handler.remotelog('q1', '002', 'ACCEPTED', { size: 10 });


        const entry = await h.waitFor(() => sidecar.events().find(e => e.type === 'log.entry'));
        assert.equal(entry.entry.seq, '002');
        assert.equal(reporter.counters.failed, 1);

        // the health event reports them
        reporter.addHealth();
        const health = await h.waitFor(() => sidecar.events().find(e => e.type === 'plugin.health'));
        assert.ok(health.hook_errors >= 6);
        assert.equal(health.failed, 1);
        sidecar.batches.forEach(h.assertValid);
    }));

test('`hooks` limits what is registered and reported', async () => {
    const { handler } = await h.loadPlugin('main', { url: 'http://127.0.0.1:9', hooks: ['log:entry', 'queue:bounce', 'nonsense'] });
    const ours = [...handler.hooks.entries()].filter(([, list]) => list.some(x => x.title === 'OTel MTA')).map(([name]) => name);
    assert.deepEqual(ours.sort(), ['log:entry', 'queue:bounce']);
});

test('a bad config value falls back to its default and is logged, the plugin still loads', async () => {
    const { logger, reporter } = await h.loadPlugin('main', { url: 'ftp://x', bufferSize: 'lots', flushIntervalMs: -5 });
    assert.equal(reporter.cfg.bufferSize, 10000);
    assert.equal(reporter.cfg.flushIntervalMs, 1000);
    assert.equal(reporter.cfg.url.href, 'http://127.0.0.1:9477/v1/events');
    assert.equal(logger.lines.filter(l => l.level === 'error' && /config/.test(l.text)).length, 3);
});

test('loads as modules/zonemta-otel-mta from the application node_modules', async () => {
    const fs = require('fs');
    const os = require('os');
    const path = require('path');
    const PluginHandler = require('@zone-eu/wild-plugins');
    const app = fs.mkdtempSync(path.join(os.tmpdir(), 'zonemta-app-'));
    fs.mkdirSync(path.join(app, 'node_modules'));
    fs.symlinkSync(h.PLUGIN_PATH, path.join(app, 'node_modules', 'zonemta-otel-mta'), 'dir');
    const cwd = process.cwd();
    process.chdir(app);
    try {
        const handler = new PluginHandler({
            logger: h.quietLogger(),
            plugins: { 'modules/zonemta-otel-mta': { enabled: 'sender', url: 'http://127.0.0.1:9', handleSignals: false } },
            context: 'sender',
            log: {},
            db: {}
        });
        await new Promise(resolve => handler.load(resolve));
        assert.deepEqual(handler.loaded.map(p => p.title), ['OTel MTA']);
        assert.ok(handler.hooks.has('sender:delivered'));
    } finally {
        process.chdir(cwd);
        fs.rmSync(app, { recursive: true, force: true });
    }
});

test('init resolves and logs when setup fails; ZoneMTA goes on', async () => {
    const logger = h.quietLogger();
    const app = {
        logger,
        config: {},
        manager: { context: 'sender' },
        addHook() {
            throw new Error('host exploded');
        }
    };
    await plugin.init(app);
    assert.ok(logger.lines.some(l => l.level === 'error' && /host exploded/.test(l.text)));
});
