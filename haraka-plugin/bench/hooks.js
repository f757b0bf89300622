'use strict';

// Hook cost inside a real Haraka 3.3.4: its plugin loader (plugins.js) and
// real Connection objects, fed SMTP sessions through a socket stand-in (as
// `haraka --test` does), so every hook runs exactly as in a server.
//
// Two runs of the same sessions in child processes (Haraka's plugin registry
// is one per process), alternated: with an empty plugin registered for the
// same hooks (baseline), and with otel-mta really shipping its events to a
// sink in another process. Each hook call of the plugin under test is timed
// from entering it to its next() call: the time the hook holds up Haraka
// (what Haraka does after next() is the same in both runs). The sessions'
// CPU time shows the whole cost, batching and sending included.
//
// A session: EHLO, MAIL, RCPT (accepted), RCPT (refused by a plugin), DATA,
// a 2 KiB message queued, QUIT.
//
//   node bench/hooks.js [--sessions N] [--runs R] [--json]
//
// Targets (per hook call, ours): median <= 5 us, p99 <= 50 us.

const { EventEmitter } = require('events');
const { fork } = require('child_process');
const fs = require('fs');
const path = require('path');
const h = require('../test/helpers');

const args = process.argv.slice(2);
const argValue = (name, def) => {
    const i = args.indexOf(name);
    return i >= 0 ? Number(args[i + 1]) : def;
};
const SESSIONS = argValue('--sessions', 20000);
const RUNS = argValue('--runs', 3);
const JSON_OUT = args.includes('--json');

const BODY = `From: alice@sender.test\r\nTo: bob@rcpt.test\r\nSubject: bench\r\nMessage-ID: <{n}@sender.bench>\r\n\r\n${'Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n'.repeat(36)}`;

// ---- child: one configuration ---------------------------------------------------------

/** The socket Haraka's Connection reads from and writes to; replies resolve read(). */
class FakeClient extends EventEmitter {
    constructor() {
        super();
        this.remoteAddress = '192.0.2.7';
        this.remotePort = 40000;
        this.localAddress = '127.0.0.1';
        this.localPort = 25;
        this.pending = '';
        this.waiter = null;
    }
    write(buf) {
        this.pending += buf;
        if (this.waiter && /(^|\r\n)\d{3} [^\r\n]*\r\n$/.test(this.pending)) {
            const w = this.waiter;
            this.waiter = null;
            const reply = this.pending;
            this.pending = '';
            w(reply);
        }
        return true;
    }
    read() {
        return new Promise(resolve => {
            this.waiter = resolve;
            this.write('');
        });
    }
    // as from a socket: in a later turn of the event loop, so timers and I/O
    // (the plugin's sending) run between commands as in a server
    send(text) {
        const reply = this.read();
        setImmediate(() => this.emit('data', Buffer.from(text)));
        return reply;
    }
    pause() {}
    resume() {}
    end() {
        this.emit('close');
    }
    destroy() {}
}

async function child(mode, sinkUrl) {
    const dir = h.harakaDir({
        ports: [25],
        plugins: [mode === 'ours' ? 'otel-mta' : 'bench_empty', 'bench_rdns', 'test_policy', 'rcpt_to.in_host_list', 'queue/discard'],
        pluginDirs: [path.join(__dirname, 'plugins')],
        files: {
            'otel-mta.ini': `url=${sinkUrl}\n[transport]\nhandle_signals=false\n`,
            'log.ini': '[main]\nlevel=warn\nformat=default\n'
        }
    });
    process.env.HARAKA = dir;
    process.env.YES_REALLY_DO_DISCARD = '1';
    const plugins = require(path.join(h.HARAKA_PATH, 'plugins'));
    const Connection = require(path.join(h.HARAKA_PATH, 'connection'));
    const Notes = require('haraka-notes');
    plugins.server = { notes: new Notes() };
    plugins.load_plugins();

    // time each hook of the plugin under test: entry to its next() call
    const name = mode === 'ours' ? 'otel-mta' : 'bench_empty';
    const plugin = plugins.registered_plugins[name];
    const samples = {};
    let recording = false;
    for (const [hook, items] of Object.entries(plugins.registered_hooks)) {
        for (const item of items.filter(i => i.plugin === name)) {
            const orig = plugin[item.method];
            const list = (samples[hook] = []);
            plugin[item.method] = function (next, obj, params) {
                const t0 = process.hrtime.bigint();
                let t1 = 0n;
                orig.call(this, (...a) => {
                    t1 = process.hrtime.bigint();
                    return next(...a);
                }, obj, params);
                if (recording) {
                    list.push(Number(t1 - t0));
                }
            };
        }
    }

    const server = { address: () => ({ port: 25, family: 'ipv4', address: '127.0.0.1' }), notes: new Notes(), cfg: {} };
    async function session(n) {
        const client = new FakeClient();
        const greeting = client.read();
        Connection.createConnection(client, server, {});
        const replies = [await greeting];
        for (const line of ['EHLO client.bench.test', 'MAIL FROM:<alice@sender.test>', 'RCPT TO:<bob@rcpt.test>', 'RCPT TO:<nobody@rcpt.test>', 'DATA']) {
            replies.push(await client.send(line + '\r\n'));
        }
        replies.push(await client.send(BODY.replace('{n}', n) + '.\r\n'));
        replies.push(await client.send('QUIT\r\n'));
        return replies.map(r => r.slice(0, 3)).join(',');
    }

    const expect = '220,250,250,250,550,354,250,221';
    for (let i = 0; i < Math.min(2000, SESSIONS / 5); i++) {
        const got = await session(i); // warm-up
        if (got !== expect) {
            throw new Error(`unexpected replies ${got}`);
        }
    }
    recording = true;
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < SESSIONS; i++) {
        await session(i);
    }
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu = process.cpuUsage(cpu0);
    recording = false;
    let transport = null;
    if (mode === 'ours') {
        const lifecycle = plugin._lifecycle;
        await lifecycle.drainAll(10000);
        transport = [...lifecycle.reporters][0].stats();
        lifecycle.closeAll();
    }
    // Haraka's config watchers and queue timers keep a process alive: leave once the result is out
    process.send({ samples, cpu_us_per_session: (cpu.user + cpu.system) / SESSIONS, wall_s: wall, transport }, () => {
        fs.rmSync(dir, { recursive: true, force: true });
        process.exit(0);
    });
}

// ---- parent ---------------------------------------------------------------------------

function summary(values) {
    const sorted = Float64Array.from(values).sort();
    const q = p => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] / 1000;
    return { median: q(0.5), p99: q(0.99), p999: q(0.999), n: sorted.length };
}

function runChild(mode, sinkUrl) {
    return new Promise((resolve, reject) => {
        const c = fork(__filename, ['--child', mode, sinkUrl, '--sessions', String(SESSIONS)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
        let result = null;
        c.on('message', m => (result = m));
        c.on('exit', code => (code === 0 && result ? resolve(result) : reject(new Error(`${mode} run exited ${code}`))));
    });
}

async function main() {
    const sink = fork(path.join(__dirname, 'sink.js'), { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const { port } = await new Promise(resolve => sink.once('message', resolve));
    const sinkUrl = `http://127.0.0.1:${port}`;
    const runs = { baseline: [], ours: [] };
    for (let r = 0; r < RUNS; r++) {
        runs.baseline.push(await runChild('empty', sinkUrl));
        runs.ours.push(await runChild('ours', sinkUrl));
    }
    sink.send('stats');
    const sinkStats = await new Promise(resolve => sink.once('message', resolve));
    sink.disconnect();

    const merged = kind => {
        const out = {};
        for (const run of runs[kind]) {
            for (const [hook, list] of Object.entries(run.samples)) {
                (out[hook] = out[hook] || []).push(...list);
            }
        }
        return out;
    };
    const base = merged('baseline');
    const ours = merged('ours');
    const rows = Object.keys(ours)
        .filter(hook => ours[hook].length)
        .map(hook => ({ hook, baseline: base[hook] && base[hook].length ? summary(base[hook]) : null, ours: summary(ours[hook]) }));
    const median = list => list.slice().sort((a, b) => a - b)[Math.floor(list.length / 2)];
    const cpuBase = median(runs.baseline.map(r => r.cpu_us_per_session));
    const cpuOurs = median(runs.ours.map(r => r.cpu_us_per_session));
    const transport = runs.ours.map(r => r.transport);
    const result = {
        node: process.version,
        sessions_per_run: SESSIONS,
        runs: RUNS,
        rows,
        all: { baseline: summary(Object.values(base).flat()), ours: summary(Object.values(ours).flat()) },
        cpu_us_per_session: { baseline: cpuBase, ours: cpuOurs, added: cpuOurs - cpuBase },
        transport: { sent: transport.reduce((a, t) => a + t.sent, 0), dropped: transport.reduce((a, t) => a + t.dropped, 0), failed: transport.reduce((a, t) => a + t.failed, 0), sink_requests: sinkStats.requests, sink_bytes: sinkStats.bytes },
        targets: { median_us: 5, p99_us: 50 }
    };
    // and every event really reached the sink (a starved sender would look cheap)
    result.pass = rows.every(r => r.ours.median <= 5 && r.ours.p99 <= 50) && result.transport.dropped === 0 && result.transport.failed === 0;

    if (JSON_OUT) {
        console.log(JSON.stringify(result, null, 2));
    } else {
        const f = v => (v === undefined ? '       -' : v.toFixed(2).padStart(8));
        console.log(`node ${process.version}, Haraka 3.3.4, ${RUNS} x ${SESSIONS} sessions per plugin; each hook call, entry to next(), microseconds`);
        console.log('hook                    empty med     p99   p99.9 | otel-mta med     p99   p99.9');
        for (const r of [...rows, { hook: 'all hooks', baseline: result.all.baseline, ours: result.all.ours }]) {
            const b = r.baseline || {};
            console.log(`${r.hook.padEnd(22)} ${f(b.median)} ${f(b.p99)} ${f(b.p999)} | ${f(r.ours.median)} ${f(r.ours.p99)} ${f(r.ours.p999)}`);
        }
        const c = result.cpu_us_per_session;
        console.log(`CPU per session (Haraka and the plugin, sending included): ${c.baseline.toFixed(0)} us with the empty plugin, ${c.ours.toFixed(0)} us with otel-mta (+${c.added.toFixed(0)} us, ${((100 * c.added) / c.baseline).toFixed(1)} %)`);
        const t = result.transport;
        console.log(`transport: ${t.sent} events sent in ${t.sink_requests} requests (${(t.sink_bytes / 1024).toFixed(0)} KiB gzip), dropped ${t.dropped}, failed ${t.failed}`);
        console.log(`targets (otel-mta, every hook): median <= 5 us, p99 <= 50 us: ${result.pass ? 'PASS' : 'FAIL'}`);
    }
    process.exitCode = result.pass ? 0 : 1;
}

if (args[0] === '--child') {
    child(args[1], args[2]).catch(err => {
        console.error(err);
        process.exit(2);
    });
} else {
    main().catch(err => {
        console.error(err);
        process.exit(2);
    });
}
