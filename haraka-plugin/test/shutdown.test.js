'use strict';

// Shutdown of a real Haraka process: on SIGTERM (Haraka handles it only as
// pid 1) the plugin sends what it holds, then the process ends by the signal
// as it would have without the plugin. On SIGINT (and SIGTERM as pid 1)
// Haraka's own handler decides: with graceful_shutdown it calls the plugin's
// shutdown(), which sends what it holds; without, Haraka exits at once.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

test('SIGTERM: what is buffered is sent, then Haraka ends by the signal', { timeout: 30000 }, async () => {
    const sidecar = await h.startSidecar();
    const haraka = await h.startHaraka({
        plugins: ['otel-mta', 'rcpt_to.in_host_list', 'queue/discard'],
        // nothing leaves before the shutdown unless the shutdown sends it
        files: { 'otel-mta.ini': `url=${sidecar.url}\n[buffer]\nflush_interval_ms=60000\n[transport]\nshutdown_timeout_ms=3000\n` }
    });
    try {
        const c = await h.SmtpClient.connect(haraka.port);
        await c.cmd('EHLO term.client.test');
        await c.cmd('MAIL FROM:<alice@sender.test>');
        await c.cmd('RCPT TO:<bob@rcpt.test>');
        const [, final] = await c.data(h.message({ 'Message-ID': '<term@sender.test>' }));
        assert.equal(final.code, 250);
        await c.cmd('QUIT');
        await h.sleep(100);
        assert.equal(sidecar.events().length, 0, 'nothing sent yet');
        const started = Date.now();
        haraka.proc.kill('SIGTERM');
        const exit = await haraka.exited;
        assert.equal(exit.signal, 'SIGTERM');
        assert.ok(Date.now() - started < 3000, `${Date.now() - started} ms`);
        const types = sidecar.events().map(e => e.type);
        assert.deepEqual(types.filter(t => t !== 'haraka.log').sort(), ['haraka.connection', 'haraka.transaction']);
        assert.equal(sidecar.events('haraka.transaction')[0].message_id, '<term@sender.test>');
    } finally {
        await haraka.stop();
        await sidecar.close();
    }
});

test('SIGINT with graceful_shutdown: Haraka asks the plugin to shut down, what it holds is sent', { timeout: 30000 }, async () => {
    const sidecar = await h.startSidecar();
    const port = await h.freePort();
    const haraka = await h.startHaraka({
        ports: [port],
        plugins: ['otel-mta', 'rcpt_to.in_host_list', 'queue/discard'],
        files: {
            'smtp.ini': `listen=127.0.0.1:${port}\nnodes=0\ngraceful_shutdown=true\n`,
            'otel-mta.ini': `url=${sidecar.url}\n[buffer]\nflush_interval_ms=60000\n`
        }
    });
    try {
        const c = await h.SmtpClient.connect(haraka.port);
        await c.cmd('EHLO int.client.test');
        await c.cmd('MAIL FROM:<alice@sender.test>');
        await c.cmd('RCPT TO:<bob@rcpt.test>');
        await c.data(h.message({ 'Message-ID': '<int@sender.test>' }));
        await c.cmd('QUIT');
        await h.sleep(100);
        assert.equal(sidecar.events().length, 0);
        haraka.proc.kill('SIGINT');
        const exit = await haraka.exited;
        assert.equal(exit.code, 0);
        assert.deepEqual(sidecar.events().map(e => e.type).sort(), ['haraka.connection', 'haraka.transaction']);
    } finally {
        await haraka.stop();
        await sidecar.close();
    }
});
