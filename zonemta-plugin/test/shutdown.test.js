'use strict';

// Shutdown in real child processes: SIGTERM flushes within the time limit
// and then exits the way the process would have without the plugin; the
// plugin's timers and keep-alive socket never hold a process open.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('path');
const { spawn } = require('child_process');
const h = require('./helpers');

const CHILD = path.join(__dirname, 'fixtures', 'child.js');

function run(mode, url, { signal } = {}) {
    return new Promise((resolve, reject) => {
        const started = Date.now();
        const child = spawn(process.execPath, [CHILD, mode], { env: Object.assign({}, process.env, { SIDECAR_URL: url }), stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        let err = '';
        let readyAt = 0; // times are measured from 'ready'
        child.stdout.on('data', d => {
            out += d;
            if (!readyAt && out.includes('ready')) {
                readyAt = Date.now();
                if (signal) {
                    setTimeout(() => child.kill(signal), 50);
                }
            }
        });
        child.stderr.on('data', d => (err += d));
        const killer = setTimeout(() => child.kill('SIGKILL'), 10000);
        child.on('error', reject);
        child.on('exit', (code, sig) => {
            clearTimeout(killer);
            resolve({ code, signal: sig, out, err, ms: Date.now() - (readyAt || started) });
        });
    });
}

test('SIGTERM with no other handler: flush, then exit by the signal as before', async () => {
    const sidecar = await h.startSidecar();
    try {
        const res = await run('alone', sidecar.url, { signal: 'SIGTERM' });
        assert.equal(res.signal, 'SIGTERM', res.err);
        assert.equal(res.code, null);
        assert.equal(sidecar.events().length, 3);
        assert.ok(res.ms < 1500, `${res.ms} ms after ready`);
    } finally {
        await sidecar.close();
    }
});

test("SIGTERM with ZoneMTA's own handler: that handler runs and decides the exit; events are flushed", async () => {
    const sidecar = await h.startSidecar();
    try {
        const res = await run('zonemta-handler', sidecar.url, { signal: 'SIGTERM' });
        assert.equal(res.code, 0, res.err);
        assert.match(res.out, /stopping/);
        assert.equal(sidecar.events().length, 3);
    } finally {
        await sidecar.close();
    }
});

test('SIGTERM with the sidecar down: exits within shutdownTimeoutMs, does not hang', async () => {
    const sidecar = await h.startSidecar();
    const url = sidecar.url;
    await sidecar.close();
    const res = await run('alone', url, { signal: 'SIGTERM' });
    assert.equal(res.signal, 'SIGTERM', res.err);
    assert.ok(res.ms >= 1400 && res.ms < 3500, `${res.ms} ms`);
});

test('the event loop runs empty: beforeExit flushes, exit code 0', async () => {
    const sidecar = await h.startSidecar();
    try {
        const res = await run('natural', sidecar.url);
        assert.equal(res.code, 0, res.err);
        assert.equal(sidecar.events().length, 3);
    } finally {
        await sidecar.close();
    }
});

test('timers and the keep-alive socket do not keep a process alive', async () => {
    const sidecar = await h.startSidecar();
    try {
        const res = await run('idle', sidecar.url);
        assert.equal(res.code, 0, res.err);
        assert.equal(sidecar.events().length, 3);
        assert.ok(res.ms < 2500, `exited after ${res.ms} ms`);
    } finally {
        await sidecar.close();
    }
});
