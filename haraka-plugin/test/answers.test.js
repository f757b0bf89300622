'use strict';

// The plugin never changes Haraka's answer: the same SMTP sessions against a
// real Haraka without the plugin and with it (its sidecar down, the worst
// case: every batch fails and is retried) get the same replies, and
// Haraka's hook timeouts never fire.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

const POLICY = ['test_policy', 'rcpt_to.in_host_list', 'queue/discard'];

// one session of every kind the inbound tests use
async function sessions(port) {
    const out = [];
    const c = await h.SmtpClient.connect(port);
    out.push(c.greeting);
    for (const line of ['HELO bad.helo', 'EHLO same.client.test', 'MAIL FROM:<blocked@sender.test>', 'MAIL FROM:<alice@sender.test>']) {
        out.push(await c.cmd(line));
    }
    for (const rcpt of ['bob@rcpt.test', 'nobody@rcpt.test', 'later@rcpt.test', 'dsn@rcpt.test', 'x@other.test']) {
        out.push(await c.cmd(`RCPT TO:<${rcpt}>`));
    }
    out.push(...(await c.data(h.message({ 'Message-ID': '<same@sender.test>' }))));
    for (const subject of ['spam', 'tempfail', 'noqueue']) {
        out.push(await c.cmd('MAIL FROM:<alice@sender.test>'));
        out.push(await c.cmd('RCPT TO:<bob@rcpt.test>'));
        out.push(...(await c.data(h.message({ Subject: subject }))));
    }
    out.push(await c.cmd('RSET'));
    out.push(await c.cmd('QUIT'));
    // uuids and the host name differ from server to server
    return out.map(r => (r ? `${r.code} ${r.text}`.replace(/[0-9A-F]{8}-[0-9A-F-]{27}(\.\d+)*/g, '<uuid>').replace(/\(\w{6}\)/, '(<banner>)') : 'closed'));
}

test("the same sessions get the same replies with and without the plugin (its sidecar down)", { timeout: 60000 }, async () => {
    const dead = await h.freePort();
    const without = await h.startHaraka({ plugins: POLICY });
    const withPlugin = await h.startHaraka({
        plugins: ['otel-mta', ...POLICY],
        files: { 'otel-mta.ini': `url=http://127.0.0.1:${dead}\n[buffer]\nflush_interval_ms=20\n[transport]\nretry_base_ms=5\nretry_max_ms=20\n[events]\nlog_lines=true\n` }
    });
    try {
        const a = await sessions(without.port);
        const b = await sessions(withPlugin.port);
        assert.deepEqual(b, a);
        assert.ok(a.length > 20);
        assert.ok(a.some(r => r.startsWith('550 No such user here')));
        await h.sleep(200);
        assert.doesNotMatch(withPlugin.log(), /timed out|otel-mta.*failed|ran callback multiple times/i);
        assert.match(withPlugin.log(), /\[otel-mta\] sidecar http:\/\/127\.0\.0\.1:\d+: ECONNREFUSED, retrying/, 'says why, rate limited');
    } finally {
        await without.stop();
        await withPlugin.stop();
    }
});
