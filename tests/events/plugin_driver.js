'use strict';

// Drives the real ZoneMTA plugin (zonemta-plugin/) from a Python test: each
// `load` builds ZoneMTA's real plugin host (@zone-eu/wild-plugins) for one
// context, and the commands run hooks with arguments shaped as ZoneMTA builds
// them (the plugin's own test helpers, copied from ZoneMTA's lib/*.js), in
// the order lib/mail-drop.js and lib/sender.js run them. Outcomes go through
// handler.remotelog(), which runs log:entry exactly as in ZoneMTA.
//
// Protocol: one JSON command per stdin line, one JSON answer per stdout line.

const path = require('path');
const readline = require('readline');

const PLUGIN = path.resolve(__dirname, '..', '..', 'zonemta-plugin');
const h = require(path.join(PLUGIN, 'test', 'helpers.js'));
const plugin = require(PLUGIN);

const loaded = [];
const sleep = ms => new Promise(r => setTimeout(r, ms));

async function load(cmd) {
    const ctx = await h.loadPlugin(cmd.context, Object.assign({ handleSignals: false }, cmd.config || {}));
    loaded.push(ctx);
    return { index: loaded.length - 1 };
}

// lib/mail-drop.js: message:headers, message:store, message:queue, QUEUED
async function message(cmd) {
    const { handler } = loaded[cmd.handler];
    const { envelope, messageInfo } = h.receiverEnvelope();
    envelope.id = cmd.queue_id;
    envelope.to = cmd.recipients;
    envelope.messageId = cmd.message_id;
    envelope.headers.update('Message-ID', cmd.message_id);
    envelope.bodySize = 1234;
    messageInfo['message-id'] = cmd.message_id;
    messageInfo.to = cmd.recipients.join(',');
    await h.runHooks(handler, 'message:headers', [envelope, messageInfo]);
    await h.runHooks(handler, 'message:queue', [envelope, messageInfo]);
    handler.remotelog(cmd.queue_id, false, 'QUEUED', {
        'message-id': cmd.message_id,
        from: envelope.from,
        to: messageInfo.to,
        src: envelope.origin,
        subject: messageInfo.subject,
        body: envelope.bodySize,
        md5: '0123456789ab',
        interface: envelope.interface,
        originhost: envelope.originhost,
        transhost: envelope.transhost,
        transtype: envelope.transtype,
        user: envelope.user,
        headerFrom: 'Sender <sender@example.com>'
    });
    return {};
}

// lib/sender.js: fetch, connecting, connect, connected, connection, the
// outcome remotelog(), and sender:delivered for an accepted one.
async function deliver(cmd) {
    const { handler } = loaded[cmd.handler];
    const delivery = h.senderDelivery({
        id: cmd.queue_id,
        seq: cmd.seq,
        messageId: cmd.message_id,
        recipient: cmd.recipient,
        domain: cmd.recipient.split('@')[1]
    });
    const gap = cmd.gap_ms || 5;
    await h.runHooks(handler, 'sender:fetch', [delivery]);
    await sleep(gap);
    handler.runHooks('sender:connecting', [delivery], () => false);
    await h.runHooks(handler, 'sender:connect', [delivery, h.connectOptions()]);
    await sleep(gap);
    const connection = h.smtpConnection(true);
    handler.runHooks('sender:connected', [delivery, connection, h.smtpOptions(), true], () => false);
    await h.runHooks(handler, 'sender:connection', [delivery, connection]);
    await sleep(gap);
    if (cmd.outcome === 'ACCEPTED') {
        handler.remotelog(delivery.id, delivery.seq, 'ACCEPTED', h.acceptedData(delivery));
        await h.runHooks(handler, 'sender:delivered', [delivery, h.sendInfo(delivery)]);
    } else {
        const err = Object.assign(new Error('rejected'), { code: 'EENVELOPE', responseCode: cmd.outcome === 'DEFERRED' ? 451 : 550 });
        await h.runHooks(handler, 'sender:responseError', [delivery, connection, err]);
        const data = h.deferredData(delivery, cmd.defcount || 1, true);
        if (cmd.outcome === 'REJECTED') {
            delete data.defcount;
            delete data.nextattempt;
            data.category = 'recipient';
            data.response = '550 5.1.1 No such user';
        }
        handler.remotelog(delivery.id, delivery.seq, cmd.outcome, data);
    }
    return {};
}

// lib/queue-server.js RELEASE: queue:release with [zone, data]
async function release(cmd) {
    const { handler } = loaded[cmd.handler];
    const data = { id: cmd.queue_id, seq: cmd.seq, status: cmd.status === 'unknown' ? undefined : { delivered: cmd.status === 'delivered' } };
    await h.runHooks(handler, 'queue:release', [{ name: 'default' }, data]);
    return {};
}

// Many log:entry hooks at once (buffer tests): DELETED entries of distinct queue ids.
let entryCounter = 0;
async function entries(cmd) {
    const { handler } = loaded[cmd.handler];
    for (let i = 0; i < cmd.count; i++) {
        const n = entryCounter++;
        handler.remotelog(cmd.queue_id + n.toString(16).padStart(6, '0'), '001', 'DELETED', { reason: 'test ' + n });
    }
    return {};
}

// Many ACCEPTED entries at once, shaped as lib/sender.js logs them (big batches).
async function accepted(cmd) {
    const { handler } = loaded[cmd.handler];
    const delivery = h.senderDelivery();
    for (let i = 0; i < cmd.count; i++) {
        const n = entryCounter++;
        handler.remotelog(cmd.queue_id + n.toString(16).padStart(6, '0'), '001', 'ACCEPTED', h.acceptedData(delivery));
    }
    return {};
}

const OPS = {
    accepted,
    load,
    message,
    deliver,
    release,
    entries,
    async health(cmd) {
        loaded[cmd.handler].reporter.addHealth();
        return {};
    },
    async stats(cmd) {
        return loaded[cmd.handler].reporter.stats();
    },
    async flush(cmd) {
        loaded[cmd.handler].reporter.flush();
        return {};
    },
    async drain(cmd) {
        // drainAll resolves one boolean per reporter: drained means all of them
        const results = await plugin.drainAll(cmd.timeout_ms || 5000);
        return { drained: results.every(Boolean) };
    },
    async sleep(cmd) {
        await sleep(cmd.ms);
        return {};
    }
};

const rl = readline.createInterface({ input: process.stdin });
let chain = Promise.resolve();
rl.on('line', line => {
    chain = chain.then(async () => {
        let answer;
        try {
            const cmd = JSON.parse(line);
            answer = Object.assign({ ok: true }, await OPS[cmd.op](cmd));
        } catch (err) {
            answer = { ok: false, error: String(err && err.stack ? err.stack : err) };
        }
        process.stdout.write(JSON.stringify(answer) + '\n');
    });
});
rl.on('close', () => {
    chain.then(() => {
        plugin.closeAll();
        process.exit(0);
    });
});
