'use strict';

// Haraka as a relay: a real Haraka accepts mail from a client it relays for
// and delivers it with its own outbound queue to a scripted SMTP server,
// which accepts one recipient, defers one (then accepts it on the retry) and
// refuses one. Each attempt must be reported with its outcome, the MX, the
// reply and the message's Message-ID (kept in the transaction's notes).

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

test('delivered, deferred then delivered on the retry, and bounced', { timeout: 60000 }, async () => {
    const sidecar = await h.startSidecar();
    const sink = await h.startSmtpSink([
        ['grey@', '451 4.7.1 Greylisted, try again later'],
        ['gone@', '550 5.1.1 No such user']
    ]);
    const haraka = await h.startHaraka({
        plugins: ['otel-mta', 'test_policy'],
        files: {
            'otel-mta.ini': `url=${sidecar.url}\n[buffer]\nflush_interval_ms=50\n`,
            'test_policy.ini': `relay_helo=relay.client.test\nmx=127.0.0.1:${sink.port}\n`,
            'outbound.ini': 'local_mx_ok=true\nenable_tls=false\ntemp_fail_intervals=5s\n'
        }
    });
    try {
        const c = await h.SmtpClient.connect(haraka.port);
        await c.cmd('EHLO relay.client.test');
        await c.cmd('MAIL FROM:<alice@sender.test>');
        for (const rcpt of ['bob@dest.test', 'grey@dest.test', 'gone@dest.test']) {
            assert.equal((await c.cmd(`RCPT TO:<${rcpt}>`)).code, 250, rcpt);
        }
        const [, queued] = await c.data(h.message({ 'Message-ID': '<relay-1@Sender.TEST>' }));
        assert.equal(queued.code, 250);
        await c.cmd('QUIT');

        const [t] = await h.waitFor(() => sidecar.events('haraka.transaction').filter(e => e.helo === 'relay.client.test').length && sidecar.events('haraka.transaction'), 10000, 'the inbound transaction');
        assert.equal(t.outcome, 'accepted');
        assert.equal(t.relaying, true);
        assert.equal(t.outbound_queue, true, "in Haraka's own outbound queue: the delivery events complete the message");
        const mine = () => sidecar.events('haraka.delivery').filter(e => e.transaction_id.startsWith(t.transaction_id));
        await h.waitFor(() => mine().some(e => e.outcome === 'deferred'), 15000, 'the deferral');
        sink.rules = sink.rules.filter(([s]) => s !== 'grey@'); // the greylisting lets it through next time
        // the retry comes after temp_fail_intervals (5 s, Haraka's minimum)
        await h.waitFor(() => mine().filter(e => e.outcome === 'delivered').length >= 2 && mine().some(e => e.outcome === 'bounced'), 30000, 'delivered twice and a bounce');
        const byOutcome = o => mine().filter(e => e.outcome === o);

        const [first, retried] = byOutcome('delivered');
        const [deferred] = byOutcome('deferred');
        const [bounced] = byOutcome('bounced');
        for (const e of [first, retried, deferred, bounced]) {
            assert.equal(e.message_id, '<relay-1@Sender.TEST>', e.outcome);
            assert.equal(e.domain, 'dest.test');
            assert.match(e.transaction_id, new RegExp(`^${t.transaction_id.replace('.', '\\.')}\\.\\d+$`));
            assert.ok(e.queued_ms >= t.start_ms && e.queued_ms <= e.time_ms);
        }
        assert.deepEqual(first.recipients.map(r => r.address), ['bob@dest.test']);
        assert.equal(first.mx, '127.0.0.1');
        assert.equal(first.port, sink.port);
        assert.equal(first.mode, 'SMTP');
        assert.equal(first.tls, false);
        assert.equal(first.reply, 'Ok: queued as SINK1', 'as Haraka keeps it: without the enhanced status');
        assert.equal(first.attempt, 0);
        assert.ok(first.start_ms <= first.time_ms, 'timed from send_email');

        assert.deepEqual(deferred.recipients, [{ address: 'grey@dest.test', code: 451, status: '4.7.1', reply: 'Greylisted, try again later' }]);
        assert.equal(deferred.reply, 'Some recipients temp failed: <grey@dest.test>', "Haraka's error text");
        assert.equal(deferred.retry_in_s, 5);
        assert.equal(deferred.attempt, 0);

        assert.deepEqual(retried.recipients.map(r => r.address), ['grey@dest.test']);
        assert.equal(retried.attempt, 1, 'the second attempt of that recipient');
        assert.ok(retried.start_ms - deferred.time_ms >= 4000, 'after the retry interval');

        assert.deepEqual(bounced.recipients, [{ address: 'gone@dest.test', code: 550, status: '5.1.1', reply: 'No such user' }]);
        assert.equal(bounced.reply, 'Some recipients failed: <gone@dest.test>');

        // the bounce Haraka sends to the sender is a message of its own, delivered too
        const sunk = sink.messages.map(m => m.rcpts.join(','));
        assert.ok(sunk.some(r => r.includes('alice@sender.test')), sunk.join(' | '));
    } finally {
        await haraka.stop();
        await sink.close();
        await sidecar.close();
    }
});
