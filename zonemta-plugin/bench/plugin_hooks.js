'use strict';

// Hook cost inside ZoneMTA's real plugin host (@zone-eu/wild-plugins).
//
// Two hosts in one process: one with an empty plugin (baseline: the host's
// own cost), one with ours, which really ships its events to a sink in
// another process. Each iteration plays one delivery attempt the way
// lib/sender.js does, alternating baseline and ours, and times every
// runHooks() call from the call to its callback (process.hrtime.bigint).
//
//   node bench/plugin_hooks.js [--iterations N] [--json]
//
// Targets (per hook call, ours): median <= 5 us, p99 <= 50 us.

const path = require('path');
const crypto = require('crypto');
const { fork } = require('child_process');
const PluginHandler = require('@zone-eu/wild-plugins');
const h = require('../test/helpers');

const args = process.argv.slice(2);
const argValue = (name, def) => {
    const i = args.indexOf(name);
    return i >= 0 ? Number(args[i + 1]) : def;
};
const ITERATIONS = argValue('--iterations', 100000);
const WARMUP = Math.min(20000, Math.ceil(ITERATIONS / 5));
const JSON_OUT = args.includes('--json');

const PLUGIN = path.resolve(__dirname, '..');
const EMPTY = path.join(__dirname, 'empty-plugin.js');

const SEQUENCE = ['sender:fetch', 'sender:connecting', 'sender:connect', 'sender:connected', 'sender:connection', 'log:entry', 'sender:delivered'];

const silent = { info() {}, warn() {}, error() {}, verbose() {}, debug() {}, silly() {} };

async function host(context, key, config) {
    const handler = new PluginHandler({
        logger: silent,
        pluginsPath: __dirname,
        corePluginsPath: __dirname,
        plugins: { [key]: Object.assign({ enabled: '*' }, config) },
        context,
        log: {},
        db: {}
    });
    await new Promise(resolve => handler.load(resolve));
    if (handler.loaded.length !== 1) {
        throw new Error('plugin did not load: ' + key);
    }
    return handler;
}

function run(handler, name, hookArgs) {
    return new Promise(resolve => handler.runHooks(name, hookArgs, resolve));
}

async function timed(handler, name, hookArgs) {
    const t0 = process.hrtime.bigint();
    await run(handler, name, hookArgs);
    return Number(process.hrtime.bigint() - t0);
}

// The arguments of one attempt, built outside the timed region.
function attemptArgs(i) {
    const delivery = h.senderDelivery({ id: '18c5f3d2a3e0' + (i >>> 12).toString(16).padStart(6, '0'), seq: (i & 0xfff).toString(16).padStart(3, '0') });
    const connection = h.smtpConnection(true);
    const entry = Object.assign({ id: delivery.id, seq: delivery.seq, action: 'ACCEPTED' }, h.acceptedData(delivery));
    return {
        'sender:fetch': [delivery],
        'sender:connecting': [delivery],
        'sender:connect': [delivery, h.connectOptions()],
        'sender:connected': [delivery, connection, h.smtpOptions(), true],
        'sender:connection': [delivery, connection],
        'log:entry': [entry],
        'sender:delivered': [delivery, h.sendInfo(delivery)]
    };
}

function summary(samples) {
    const sorted = Float64Array.from(samples).sort();
    const q = p => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] / 1000;
    return { median: q(0.5), p99: q(0.99), p999: q(0.999), n: sorted.length };
}

function idBench() {
    const N = 1000000;
    let t0 = process.hrtime.bigint();
    let x;
    for (let i = 0; i < N; i++) {
        x = crypto.randomUUID();
    }
    const uuidNs = Number(process.hrtime.bigint() - t0) / N;
    const prefix = crypto.randomBytes(9).toString('base64url') + '.';
    t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i++) {
        x = prefix + i.toString(36);
    }
    const counterNs = Number(process.hrtime.bigint() - t0) / N;
    return { uuid_ns: uuidNs, counter_ns: counterNs, last: x.length };
}

async function main() {
    const sink = fork(path.join(__dirname, 'sink.js'), { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const { port } = await new Promise(resolve => sink.once('message', resolve));

    const baseline = await host('sender', EMPTY);
    const ours = await host('sender', PLUGIN, { url: `http://127.0.0.1:${port}`, handleSignals: false });
    const reporter = [...require(PLUGIN)._reporters].pop();

    const samples = { baseline: {}, ours: {} };
    for (const name of SEQUENCE) {
        samples.baseline[name] = [];
        samples.ours[name] = [];
    }

    const total = WARMUP + ITERATIONS;
    const started = Date.now();
    for (let i = 0; i < total; i++) {
        const record = i >= WARMUP;
        const a = attemptArgs(i);
        const b = attemptArgs(i);
        for (const name of SEQUENCE) {
            const tb = await timed(baseline, name, b[name]);
            const to = await timed(ours, name, a[name]);
            if (record) {
                samples.baseline[name].push(tb);
                samples.ours[name].push(to);
            }
        }
        if ((i & 0x3f) === 0) {
            // let the flush timer and the HTTP client run, as in a live MTA
            await new Promise(r => setImmediate(r));
        }
    }
    const elapsed = (Date.now() - started) / 1000;
    await require(PLUGIN).drainAll(5000);
    sink.send('stats');
    const sinkStats = await new Promise(resolve => sink.once('message', resolve));
    sink.disconnect();

    const rows = SEQUENCE.map(name => {
        const b = summary(samples.baseline[name]);
        const o = summary(samples.ours[name]);
        return { hook: name, baseline: b, ours: o, added_median_us: o.median - b.median, added_p99_us: o.p99 - b.p99 };
    });
    const all = { baseline: summary(SEQUENCE.flatMap(n => samples.baseline[n])), ours: summary(SEQUENCE.flatMap(n => samples.ours[n])) };
    const result = {
        node: process.version,
        iterations: ITERATIONS,
        warmup: WARMUP,
        seconds: elapsed,
        rows,
        all,
        transport: Object.assign({ sink_requests: sinkStats.requests, sink_bytes: sinkStats.bytes }, reporter.stats()),
        event_ids: idBench(),
        targets: { median_us: 5, p99_us: 50 }
    };
    result.pass = rows.every(r => r.ours.median <= 5 && r.ours.p99 <= 50);

    if (JSON_OUT) {
        console.log(JSON.stringify(result, null, 2));
    } else {
        const f = v => v.toFixed(2).padStart(8);
        console.log(`node ${process.version}, ${ITERATIONS} attempts (+${WARMUP} warm-up), ${elapsed.toFixed(1)} s; runHooks() call -> callback, microseconds`);
        console.log('hook                  baseline med   p99    p99.9 |     ours med   p99    p99.9 | added med');
        for (const r of [...rows, { hook: 'all hooks', baseline: all.baseline, ours: all.ours, added_median_us: all.ours.median - all.baseline.median }]) {
            console.log(
                `${r.hook.padEnd(20)} ${f(r.baseline.median)} ${f(r.baseline.p99)} ${f(r.baseline.p999)} | ${f(r.ours.median)} ${f(r.ours.p99)} ${f(r.ours.p999)} | ${f(r.added_median_us)}`
            );
        }
        const t = result.transport;
        console.log(`transport: ${t.sent} events sent in ${t.sink_requests} requests (${(t.sink_bytes / 1024).toFixed(0)} KiB gzip), dropped ${t.dropped}, failed ${t.failed}, retries ${t.retries}`);
        console.log(`event ids: crypto.randomUUID ${result.event_ids.uuid_ns.toFixed(0)} ns, prefix+counter ${result.event_ids.counter_ns.toFixed(0)} ns`);
        console.log(`targets (ours, every hook): median <= 5 us, p99 <= 50 us: ${result.pass ? 'PASS' : 'FAIL'}`);
    }
    process.exitCode = result.pass ? 0 : 1;
    require(PLUGIN).closeAll();
}

main().catch(err => {
    console.error(err);
    process.exit(2);
});
