'use strict';

// Test helpers: a real Haraka 3.3.4 (the dev dependency) run as a server
// process from a Haraka folder made with `haraka -i`, our plugin installed in
// that folder's node_modules as Haraka's docs say; a raw SMTP client (so the
// tests see the exact replies); a local HTTP server standing in for the
// sidecar's /v1/events that checks every batch against
// schema/events.v2.schema.json; and a scripted SMTP server for Haraka's
// outbound deliveries.

const fs = require('fs');
const http = require('http');
const net = require('net');
const os = require('os');
const path = require('path');
const zlib = require('zlib');
const { spawn, execFileSync } = require('child_process');
const Ajv2020 = require('ajv/dist/2020');

const PLUGIN_PATH = path.resolve(__dirname, '..');
const HARAKA_PATH = path.dirname(require.resolve('Haraka/package.json'));
const HARAKA_BIN = path.join(HARAKA_PATH, 'bin', 'haraka');
const SCHEMA_PATH = path.resolve(PLUGIN_PATH, '..', 'schema', 'events.v2.schema.json');
const FIXTURES = path.join(__dirname, 'fixtures');

const schema = JSON.parse(fs.readFileSync(SCHEMA_PATH, 'utf8'));
const ajv = new Ajv2020({ allErrors: true, strict: true, allowUnionTypes: true });
const validateBatch = ajv.compile(schema);

function assertValid(batch) {
    if (!validateBatch(batch)) {
        const detail = JSON.stringify(validateBatch.errors.slice(0, 5), null, 2);
        throw new Error(`batch does not match schema/events.v2.schema.json:\n${detail}\n${JSON.stringify(batch).slice(0, 2000)}`);
    }
}

const sleep = ms => new Promise(r => setTimeout(r, ms));

async function waitFor(fn, timeoutMs, what) {
    const until = Date.now() + (timeoutMs || 5000);
    for (;;) {
        const v = fn();
        if (v) {
            return v;
        }
        if (Date.now() > until) {
            throw new Error('timed out waiting for ' + (what || fn.toString()));
        }
        await sleep(10);
    }
}

function freePort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.once('error', reject);
        s.listen(0, '127.0.0.1', () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

/**
 * Stand-in for the sidecar's POST /v1/events: gunzips, parses, validates
 * (400 for an invalid batch) and records every batch.
 */
async function startSidecar(opts) {
    opts = opts || {};
    const state = { batches: [], requests: [], invalid: [], respond: opts.respond || (() => 200) };
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
            state.requests.push({ url: req.url, headers: req.headers, batch, error });
            if (!error && !validateBatch(batch)) {
                error = new Error('schema');
                state.invalid.push({ batch, errors: validateBatch.errors });
            }
            const status = error ? 400 : state.respond(req, batch);
            if (status >= 200 && status < 300 && batch) {
                state.batches.push(batch);
            }
            res.writeHead(status);
            res.end();
        });
    });
    const sockets = new Set();
    server.on('connection', s => {
        sockets.add(s);
        s.on('close', () => sockets.delete(s));
    });
    await new Promise(resolve => server.listen(opts.port || 0, '127.0.0.1', resolve));
    state.port = server.address().port;
    state.url = `http://127.0.0.1:${state.port}`;
    state.events = type => state.batches.flatMap(b => b.events).filter(e => !type || e.type === type);
    // Closing fails the test if any batch did not match the schema.
    state.close = () =>
        new Promise((resolve, reject) => {
            sockets.forEach(s => s.destroy());
            server.close(() => {
                if (state.invalid.length) {
                    return reject(new Error(`${state.invalid.length} batch(es) did not match the schema: ${JSON.stringify(state.invalid[0].errors.slice(0, 3))}`));
                }
                resolve();
            });
        });
    return state;
}

// ---- a Haraka folder and server -------------------------------------------------

/**
 * A Haraka folder made by `haraka -i`, with our plugin in its node_modules
 * (a symlink to this package, as `npm install <folder>` makes one) and the
 * test plugins of test/fixtures/plugins.
 *
 * @param {object} o
 * @param {string[]} o.plugins config/plugins, in order
 * @param {object} [o.files] more config files: name -> text, or {append: text}
 * @param {number[]} o.ports listen ports
 * @param {string[]} [o.pluginDirs] more folders of plugin files to copy into plugins/
 */
function harakaDir(o) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'haraka-otel-'));
    execFileSync(process.execPath, [HARAKA_BIN, '-i', dir], { stdio: 'ignore' });
    fs.mkdirSync(path.join(dir, 'node_modules'), { recursive: true });
    fs.symlinkSync(PLUGIN_PATH, path.join(dir, 'node_modules', 'haraka-plugin-otel-mta'), 'dir');
    for (const from of [path.join(FIXTURES, 'plugins'), ...(o.pluginDirs || [])]) {
        for (const f of fs.readdirSync(from)) {
            fs.copyFileSync(path.join(from, f), path.join(dir, 'plugins', f));
        }
    }
    const files = Object.assign(
        {
            'smtp.ini': `listen=${o.ports.map(p => `127.0.0.1:${p}`).join(',')}\nnodes=0\n`,
            plugins: o.plugins.join('\n') + '\n',
            me: 'mx.haraka.test\n',
            host_list: 'rcpt.test\n',
            'log.ini': '[main]\nlevel=info\n'
        },
        o.files || {}
    );
    for (const [name, text] of Object.entries(files)) {
        // {append: text} adds to the file `haraka -i` made (Haraka does not merge a file with its defaults)
        if (text && typeof text === 'object') {
            fs.appendFileSync(path.join(dir, 'config', name), '\n' + text.append);
        } else {
            fs.writeFileSync(path.join(dir, 'config', name), text);
        }
    }
    return dir;
}

/** A running Haraka server (node bin/haraka -c dir); resolves once every port accepts connections. */
async function startHaraka(o) {
    const ports = o.ports || [await freePort()];
    const dir = harakaDir(Object.assign({}, o, { ports }));
    const env = Object.assign({}, process.env, { YES_REALLY_DO_DISCARD: '1' });
    delete env.OTEL_MTA_EVENTS_URL;
    delete env.OTEL_MTA_EVENTS_API_KEY;
    Object.assign(env, o.env || {});
    const proc = spawn(process.execPath, [HARAKA_BIN, '-c', dir], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    proc.stdout.on('data', d => (log += d));
    proc.stderr.on('data', d => (log += d));
    const exited = new Promise(resolve => proc.on('exit', (code, signal) => resolve({ code, signal })));
    const h = {
        dir,
        ports,
        port: ports[0],
        proc,
        exited,
        log: () => log,
        async stop(signal) {
            if (proc.exitCode === null && proc.signalCode === null) {
                proc.kill(signal || 'SIGKILL');
            }
            const r = await exited;
            fs.rmSync(dir, { recursive: true, force: true });
            return r;
        }
    };
    try {
        // "Listening on" is logged once the socket is bound (a probe connection would be reported)
        await waitFor(() => proc.exitCode !== null || ports.every(p => log.includes(`Listening on 127.0.0.1:${p}`)), 20000, 'Haraka listening');
        if (proc.exitCode !== null) {
            throw new Error(`Haraka exited (${proc.exitCode})`);
        }
    } catch (err) {
        await h.stop();
        throw new Error(`${err.message}\n${log}`);
    }
    return h;
}

// ---- a raw SMTP client -------------------------------------------------------------

/** Reads SMTP replies ({code, text, lines, raw}) off a socket, one per read(). */
class SmtpClient {
    static connect(port) {
        return new Promise((resolve, reject) => {
            const socket = net.connect(port, '127.0.0.1');
            const c = new SmtpClient(socket);
            socket.once('error', reject);
            c.read().then(greeting => {
                c.greeting = greeting;
                resolve(c);
            }, reject);
        });
    }

    constructor(socket) {
        this.socket = socket;
        this.buffer = '';
        this.replies = [];
        this.waiters = [];
        this.closed = false;
        socket.setEncoding('utf8');
        socket.on('data', d => {
            this.buffer += d;
            this._parse();
        });
        socket.on('close', () => {
            this.closed = true;
            this.waiters.splice(0).forEach(w => w.resolve(null));
        });
        socket.on('error', () => {});
    }

    _parse() {
        for (;;) {
            const m = /^(?:\d{3}-[^\r\n]*\r\n)*\d{3}(?: [^\r\n]*)?\r\n/.exec(this.buffer);
            if (!m) {
                return;
            }
            const raw = m[0];
            this.buffer = this.buffer.slice(raw.length);
            const lines = raw.split('\r\n').filter(Boolean);
            const reply = { code: Number(raw.slice(0, 3)), lines: lines.map(l => l.slice(4)), raw };
            reply.text = reply.lines.map(l => l.trim()).filter(Boolean).join(' ');
            const w = this.waiters.shift();
            if (w) {
                w.resolve(reply);
            } else {
                this.replies.push(reply);
            }
        }
    }

    read() {
        if (this.replies.length) {
            return Promise.resolve(this.replies.shift());
        }
        if (this.closed) {
            return Promise.resolve(null);
        }
        return new Promise(resolve => this.waiters.push({ resolve }));
    }

    write(text) {
        this.socket.write(text);
    }

    cmd(line) {
        this.write(line + '\r\n');
        return this.read();
    }

    /** DATA, then the message (CRLF lines, dot-stuffed) and the final dot: [354 reply, final reply]. */
    async data(message) {
        const go = await this.cmd('DATA');
        if (!go || go.code !== 354) {
            return [go, null];
        }
        const body = message.replace(/\r?\n/g, '\r\n').replace(/^\./gm, '..');
        this.write(body + (body.endsWith('\r\n') ? '' : '\r\n') + '.\r\n');
        return [go, await this.read()];
    }

    close() {
        this.socket.destroy();
    }
}

function message(headers, body) {
    const h = Object.assign({ From: 'alice@sender.test', To: 'bob@rcpt.test', Subject: 'hello', Date: new Date().toUTCString() }, headers);
    return (
        Object.entries(h)
            .filter(([, v]) => v !== null && v !== undefined)
            .map(([k, v]) => `${k}: ${v}`)
            .join('\r\n') +
        '\r\n\r\n' +
        (body || 'Hello there.\r\n')
    );
}

// ---- a scripted SMTP server (the next hop of Haraka's outbound) ---------------------

/**
 * Answers RCPT TO by the first rule whose text occurs in the address
 * (`rules`: [[substring, "451 4.7.1 ..."]]), 250 otherwise; records messages.
 */
async function startSmtpSink(rules) {
    const state = { messages: [], rules: rules || [] };
    const server = net.createServer(socket => {
        socket.setEncoding('utf8');
        let buf = '';
        let inData = false;
        let current = { from: null, rcpts: [], data: '' };
        socket.write('220 sink.test ESMTP\r\n');
        socket.on('data', d => {
            buf += d;
            let i;
            while ((i = buf.indexOf('\r\n')) >= 0) {
                const line = buf.slice(0, i);
                buf = buf.slice(i + 2);
                if (inData) {
                    if (line === '.') {
                        inData = false;
                        state.messages.push(current);
                        current = { from: null, rcpts: [], data: '' };
                        socket.write('250 2.0.0 Ok: queued as SINK1\r\n');
                    } else {
                        current.data += line + '\r\n';
                    }
                    continue;
                }
                const cmd = line.slice(0, 4).toUpperCase();
                if (cmd === 'EHLO' || cmd === 'HELO') {
                    socket.write('250-sink.test\r\n250 PIPELINING\r\n');
                } else if (cmd === 'MAIL') {
                    current.from = line;
                    socket.write('250 2.1.0 Ok\r\n');
                } else if (cmd === 'RCPT') {
                    const rule = state.rules.find(([s]) => line.includes(s));
                    if (rule) {
                        socket.write(rule[1] + '\r\n');
                    } else {
                        current.rcpts.push(line);
                        socket.write('250 2.1.5 Ok\r\n');
                    }
                } else if (cmd === 'DATA') {
                    if (!current.rcpts.length) {
                        socket.write('554 5.5.1 No valid recipients\r\n');
                    } else {
                        inData = true;
                        socket.write('354 go ahead\r\n');
                    }
                } else if (cmd === 'RSET') {
                    current = { from: null, rcpts: [], data: '' };
                    socket.write('250 Ok\r\n');
                } else if (cmd === 'QUIT') {
                    socket.end('221 Bye\r\n');
                } else {
                    socket.write('502 5.5.2 Error: command not recognized\r\n');
                }
            }
        });
        socket.on('error', () => {});
    });
    await new Promise(resolve => server.listen(0, '127.0.0.1', resolve));
    state.port = server.address().port;
    state.close = () => new Promise(resolve => server.close(resolve));
    return state;
}

module.exports = {
    PLUGIN_PATH,
    HARAKA_PATH,
    SCHEMA_PATH,
    schema,
    validateBatch,
    assertValid,
    sleep,
    waitFor,
    freePort,
    startSidecar,
    harakaDir,
    startHaraka,
    SmtpClient,
    message,
    startSmtpSink
};
