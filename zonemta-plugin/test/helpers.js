'use strict';

// Test helpers: ZoneMTA's real plugin host, a local HTTP server standing in
// for the sidecar's /v1/events, the shared JSON Schema, and hook arguments
// shaped as ZoneMTA 3.10 builds them (copied from lib/sender.js,
// lib/mail-drop.js, lib/queue-server.js and lib/mail-queue.js).

const http = require('http');
const path = require('path');
const zlib = require('zlib');
const fs = require('fs');
const PluginHandler = require('@zone-eu/wild-plugins');
const { Headers } = require('@zone-eu/mailsplit');
const Ajv2020 = require('ajv/dist/2020');

const PLUGIN_PATH = path.resolve(__dirname, '..');
const SCHEMA_PATH = path.resolve(__dirname, '..', '..', 'schema', 'events.v1.schema.json');

const schema = JSON.parse(fs.readFileSync(SCHEMA_PATH, 'utf8'));
const ajv = new Ajv2020({ allErrors: true, strict: true, allowUnionTypes: true });
const validateBatch = ajv.compile(schema);

function assertValid(batch) {
    if (!validateBatch(batch)) {
        const detail = JSON.stringify(validateBatch.errors.slice(0, 5), null, 2);
        throw new Error(`batch does not match schema/events.v1.schema.json:\n${detail}\n${JSON.stringify(batch).slice(0, 2000)}`);
    }
}

// npmlog-shaped logger that records lines instead of printing them.
function quietLogger() {
    const lines = [];
    const rec = level => (prefix, fmt, ...args) => lines.push({ level, prefix, text: require('util').format(fmt, ...args) });
    return { lines, info: rec('info'), warn: rec('warn'), error: rec('error'), verbose: rec('verbose'), silly: rec('silly'), debug: rec('debug') };
}

/**
 * Loads our plugin by path with ZoneMTA's real plugin host, constructed as
 * ZoneMTA's lib/plugins.js does (logger, pluginsPath, plugins, context, log, db).
 */
async function loadPlugin(context, pluginConfig, extraPlugins) {
    const logger = quietLogger();
    const handler = new PluginHandler({
        logger,
        pluginsPath: path.join(PLUGIN_PATH, 'test'),
        corePluginsPath: path.join(PLUGIN_PATH, 'test'),
        plugins: Object.assign(
            {
                [PLUGIN_PATH]: Object.assign({ enabled: ['receiver', 'sender', 'main'], handleSignals: false }, pluginConfig)
            },
            extraPlugins || {}
        ),
        context,
        log: {},
        db: {}
    });
    await new Promise(resolve => handler.load(resolve));
    if (!handler.loaded.some(p => p.path === PLUGIN_PATH)) {
        throw new Error('plugin not loaded: ' + JSON.stringify(logger.lines));
    }
    const plugin = require(PLUGIN_PATH);
    const reporter = [...plugin._reporters].pop();
    return { handler, logger, plugin, reporter };
}

/** handler.runHooks with a callback, as ZoneMTA calls it; resolves with the callback's error. */
function runHooks(handler, name, args) {
    return new Promise(resolve => handler.runHooks(name, args, err => resolve(err)));
}

/**
 * Stand-in for the sidecar's POST /v1/events: gunzips, parses, validates
 * (answering 400 to an invalid batch) and records every batch. `respond(req, batch, n)` may return a status code or
 * {status, headers, delayMs}; default 200.
 */
async function startSidecar(opts) {
    opts = opts || {};
    const state = {
        batches: [],
        requests: [],
        sockets: new Set(),
        invalid: [],
        respond: opts.respond || (() => 200)
    };
    const server = http.createServer((req, res) => {
        const chunks = [];
        req.on('data', c => chunks.push(c));
        req.on('end', () => {
            const raw = Buffer.concat(chunks);
            let batch = null;
            let error = null;
            try {
                const body = req.headers['content-encoding'] === 'gzip' ? zlib.gunzipSync(raw) : raw;
                batch = JSON.parse(body.toString('utf8'));
            } catch (err) {
                error = err;
            }
            const n = state.requests.length;
            const record = { method: req.method, url: req.url, headers: req.headers, socket: req.socket, rawLength: raw.length, batch, error };
            state.requests.push(record);
            state.sockets.add(req.socket);
            // every batch any test receives is checked against the shared schema
            if (!error && !validateBatch(batch)) {
                error = new Error('schema: ' + JSON.stringify(validateBatch.errors.slice(0, 3)));
                state.invalid.push({ batch, errors: validateBatch.errors });
            }
            let answer = error ? 400 : state.respond(req, batch, n);
            if (typeof answer === 'number') {
                answer = { status: answer };
            }
            if (answer.status >= 200 && answer.status < 300 && batch) {
                state.batches.push(batch);
            }
            const send = () => {
                if (!res.destroyed) {
                    res.writeHead(answer.status, answer.headers || {});
                    res.end();
                }
            };
            if (answer.delayMs) {
                setTimeout(send, answer.delayMs);
            } else {
                send();
            }
        });
    });
    const connections = new Set();
    server.on('connection', s => {
        connections.add(s);
        s.on('close', () => connections.delete(s));
    });
    await new Promise(resolve => server.listen(opts.port || 0, '127.0.0.1', resolve));
    state.port = server.address().port;
    state.url = `http://127.0.0.1:${state.port}`;
    state.server = server;
    // Closing also fails the test if any batch did not match the schema.
    state.close = () =>
        new Promise((resolve, reject) => {
            for (const s of connections) {
                s.destroy();
            }
            server.close(() => {
                if (state.invalid.length && !opts.allowInvalid) {
                    return reject(new Error(`${state.invalid.length} batch(es) did not match the schema: ${JSON.stringify(state.invalid[0].errors.slice(0, 3))}`));
                }
                resolve();
            });
        });
    state.events = () => state.batches.flatMap(b => b.events);
    return state;
}

async function waitFor(fn, timeoutMs, what) {
    const until = Date.now() + (timeoutMs || 3000);
    for (;;) {
        const v = fn();
        if (v) {
            return v;
        }
        if (Date.now() > until) {
            throw new Error('timed out waiting for ' + (what || fn.toString()));
        }
        await new Promise(r => setTimeout(r, 10));
    }
}

// ---- hook arguments shaped like ZoneMTA's ----

const RAW_HEADERS =
    'From: Sender <sender@example.com>\r\n' +
    'To: rcpt@example.net\r\n' +
    'Subject: Hello\r\n' +
    'Message-ID: <20261126173700.1234@Example.COM>\r\n' +
    'Date: Thu, 26 Nov 2026 17:37:00 +0000\r\n' +
    'MIME-Version: 1.0\r\n' +
    'Content-Type: text/plain\r\n\r\n';

/** The delivery object of lib/sender.js after GET (queue entry + meta). */
function senderDelivery(overrides) {
    const stored = new Headers(Buffer.from(RAW_HEADERS)).getList(); // as stored by setMeta
    const delivery = Object.assign(
        {
            id: '18c5f3d2a3e0001234',
            seq: '001',
            sessionId: 'n3ku2gxhddz7xapn',
            zone: 'default',
            sendingZone: 'default',
            domain: 'example.net',
            recipient: 'rcpt@example.net',
            from: 'sender@example.com',
            messageId: '<20261126173700.1234@Example.COM>',
            interface: 'feeder',
            bodySize: 1234,
            created: new Date(),
            dkim: { hashAlgo: 'sha256', bodyHash: 'abc=' },
            dnsOptions: {},
            _lock: 'lock-key',
            headers: stored
        },
        overrides || {}
    );
    delivery.headers = new Headers(delivery.headers);
    delivery.envelope = { from: delivery.from, to: delivery.recipient };
    delivery.zoneAddressIPv4 = { address: '192.0.2.10', name: 'mta.example.com' };
    return delivery;
}

/** mx-connect's connection options passed to sender:connect. */
function connectOptions() {
    return { host: '198.51.100.25', port: 25, localAddress: '192.0.2.10', localHostname: 'mta.example.com' };
}

/** nodemailer SMTPConnection options as built in getConnection(). */
function smtpOptions() {
    return {
        servername: 'mx.example.net',
        host: '198.51.100.25',
        port: 25,
        localAddress: '192.0.2.10',
        name: 'mta.example.com',
        lmtp: false,
        ignoreTLS: false,
        opportunisticTLS: true,
        secure: false
    };
}

/** Stand-in for a nodemailer SMTPConnection (only the fields ZoneMTA and we read). */
function smtpConnection(secure) {
    return { id: 'Yc0ZKm4Kx3M', options: smtpOptions(), secure: !!secure, _socket: null, logtrail: [] };
}

/** The ACCEPTED remotelog data of lib/sender.js. */
function acceptedData(delivery) {
    return {
        zone: 'default',
        from: delivery.from,
        returnPath: delivery.envelope.from,
        to: delivery.envelope.to,
        mx: 'mx.example.net',
        host: '198.51.100.25',
        ip: '192.0.2.10',
        response: '250 2.0.0 OK queued as 4ABC',
        size: 1500,
        timer: 180,
        start: 95,
        messageId: delivery.messageId,
        secure: true,
        tls: true,
        tlsVersion: 'TLSv1.3',
        tlsCipher: 'TLS_AES_256_GCM_SHA384',
        tlsAuthorized: true,
        tlsAuthorizationError: undefined,
        protocol: 'smtp',
        httpUrl: undefined,
        httpResponse: undefined
    };
}

/** The DEFERRED remotelog data of lib/sender.js. */
function deferredData(delivery, defcount, connected) {
    return {
        category: 'network',
        defcount,
        nextattempt: Date.now() + 300000,
        zone: 'default',
        from: delivery.from,
        returnPath: delivery.envelope.from,
        to: delivery.envelope.to,
        mx: connected ? 'mx.example.net' : delivery.domain,
        host: connected ? '198.51.100.25' : undefined,
        ip: connected ? '192.0.2.10' : undefined,
        response: '421 4.7.0 Try again later',
        size: undefined,
        timer: undefined,
        start: undefined,
        messageId: delivery.messageId,
        secure: false,
        tls: false,
        tlsVersion: false,
        tlsCipher: undefined,
        tlsAuthorized: false,
        tlsAuthorizationError: undefined,
        protocol: 'smtp',
        httpUrl: undefined,
        httpResponse: undefined
    };
}

/** nodemailer's send() info object. */
function sendInfo(delivery) {
    return {
        accepted: [delivery.recipient],
        rejected: [],
        ehlo: ['PIPELINING', '8BITMIME', 'STARTTLS'],
        envelopeTime: 12,
        messageTime: 40,
        messageSize: 1500,
        response: '250 2.0.0 OK queued as 4ABC'
    };
}

/** The envelope and messageInfo of lib/mail-drop.js at message:headers. */
function receiverEnvelope() {
    const headers = new Headers(Buffer.from(RAW_HEADERS));
    const envelope = {
        id: '18c5f3d2a3e0001234',
        sessionId: 'x7fd2c',
        interface: 'feeder',
        from: 'sender@example.com',
        to: ['rcpt@example.net', 'other@example.org'],
        origin: '203.0.113.5',
        originhost: 'client.example.com',
        transhost: 'client',
        transtype: 'ESMTPSA',
        user: 'sender',
        time: Date.now(),
        headers
    };
    const messageInfo = {
        'message-id': '<>',
        from: envelope.from,
        to: envelope.to.join(','),
        src: envelope.origin,
        subject: 'Hello',
        format() {
            return '';
        },
        keys() {
            return {};
        }
    };
    return { envelope, messageInfo };
}

module.exports = {
    PLUGIN_PATH,
    SCHEMA_PATH,
    schema,
    validateBatch,
    assertValid,
    quietLogger,
    loadPlugin,
    runHooks,
    startSidecar,
    waitFor,
    Headers,
    senderDelivery,
    connectOptions,
    smtpOptions,
    smtpConnection,
    acceptedData,
    deferredData,
    sendInfo,
    receiverEnvelope
};
