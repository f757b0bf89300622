'use strict';

// A real Haraka 3.3.4 server with the plugin (loaded by name from the Haraka
// folder's node_modules) and a test policy plugin, driven over SMTP: every
// reply the client gets must be the one the events report, for accepted,
// refused, deferred and abandoned transactions and refused connections.

const test = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

let sidecar;
let haraka;
let refusePort;

const UUID = /^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$/;

test.before(async () => {
    sidecar = await h.startSidecar();
    refusePort = await h.freePort();
    haraka = await h.startHaraka({
        ports: [await h.freePort(), refusePort],
        // listed after the policy: the plugin's hooks run first anyway
        plugins: ['test_policy', 'rcpt_to.in_host_list', 'queue/discard', 'otel-mta'],
        files: {
            'otel-mta.ini': `url=${sidecar.url}\n[buffer]\nflush_interval_ms=50\n[events]\nlog_lines=true\n`,
            'test_policy.ini': `refuse_port=${refusePort}\n`,
            'connection.ini': { append: '[max]\nbytes=100000\n' }
        }
    });
});

test.after(async () => {
    if (haraka) {
        await haraka.stop();
    }
    await sidecar.close();
});

// The events of the connection that greeted with `helo` (each test uses its own).
function byHelo(type, helo) {
    return sidecar.events(type).filter(e => e.helo === helo);
}

async function transactions(helo, n) {
    return h.waitFor(() => {
        const ev = byHelo('haraka.transaction', helo);
        return ev.length >= n && ev;
    }, 10000, `${n} transaction event(s) of ${helo}`);
}

async function connectionEvent(helo) {
    const [ev] = await h.waitFor(() => {
        const found = byHelo('haraka.connection', helo);
        return found.length && found;
    }, 10000, `the connection event of ${helo}`);
    return ev;
}

test('a queued message: each recipient with the reply the client got, the Message-ID, size and times', async () => {
    const helo = 'queued.client.test';
    const c = await h.SmtpClient.connect(haraka.port);
    assert.equal((await c.cmd(`EHLO ${helo}`)).code, 250);
    assert.equal((await c.cmd('MAIL FROM:<alice@sender.test>')).code, 250);
    const asked = ['bob@rcpt.test', 'nobody@rcpt.test', 'later@rcpt.test', 'dsn@rcpt.test', 'x@other.test', 'carol@rcpt.test'];
    const answers = [];
    for (const rcpt of asked) {
        answers.push(await c.cmd(`RCPT TO:<${rcpt}>`));
    }
    assert.deepEqual(answers.map(a => a.code), [250, 550, 450, 550, 550, 250]);
    const [go, final] = await c.data(h.message({ 'Message-ID': '<m1.queued@Sender.TEST>' }, 'Hello.\r\n.leading dot\r\n'));
    assert.equal(go.code, 354);
    assert.equal(final.code, 250);
    await c.cmd('QUIT');

    const [t] = await transactions(helo, 1);
    assert.equal(t.outcome, 'accepted');
    assert.equal(t.code, 250);
    assert.equal(t.reply, final.text);
    assert.equal(t.stage, 'queue_ok');
    assert.match(t.transaction_id, /^[0-9A-F-]{36}\.1$/);
    assert.equal(t.transaction_id.split('.')[0], t.connection_id);
    assert.match(t.connection_id, UUID);
    assert.ok(final.text.includes(t.transaction_id), 'Haraka names the transaction in its reply');
    assert.equal(t.mail_from, 'alice@sender.test');
    assert.equal(t.message_id, '<m1.queued@Sender.TEST>');
    assert.ok(t.size > 100 && t.size < 1000, `size ${t.size}`);

    assert.deepEqual(t.recipients.map(r => r.address), asked);
    assert.deepEqual(t.recipients.map(r => r.outcome), ['accepted', 'refused', 'deferred', 'refused', 'refused', 'accepted']);
    t.recipients.forEach((r, i) => {
        assert.equal(r.code, answers[i].code, r.address);
        assert.equal(r.reply, answers[i].text, r.address);
    });
    assert.deepEqual(
        t.recipients.map(r => r.plugin),
        [undefined, 'test_policy', 'test_policy', 'test_policy', undefined, undefined],
        'the refusing plugin; none when Haraka refused because no plugin took the recipient'
    );
    assert.equal(t.recipients[3].reply, '5.1.1 No such user', 'a DSN object: its code and text');
    assert.equal(t.recipients[4].reply, 'I cannot deliver mail for <x@other.test>');

    const times = [t.start_ms, ...t.recipients.map(r => r.time_ms), t.data_start_ms, t.data_end_ms, t.time_ms];
    assert.deepEqual(times, [...times].sort((a, b) => a - b), 'MAIL, RCPTs, DATA, end of data, end');
    assert.equal(t.remote_ip, '127.0.0.1');
    assert.equal(t.local_port, haraka.port);
    assert.equal(t.esmtp, true);
    assert.equal(t.tls, false);
    assert.equal(t.relaying, false);
    assert.equal(t.outbound_queue, undefined, 'queued by queue/discard, not by Haraka\'s outbound');

    const conn = await connectionEvent(helo);
    assert.equal(conn.connection_id, t.connection_id);
    assert.equal(conn.outcome, 'accepted');
    assert.equal(conn.transactions, 1);
    assert.equal(conn.refusals, undefined);
    assert.ok(conn.start_ms <= t.start_ms && conn.time_ms >= t.time_ms);
});

test('refusals that end a transaction: at MAIL, after the data (by a plugin) and at queueing (by Haraka)', async () => {
    const helo = 'refusals.client.test';
    const c = await h.SmtpClient.connect(haraka.port);
    await c.cmd(`EHLO ${helo}`);
    const replies = {};
    replies.mail = await c.cmd('MAIL FROM:<blocked@sender.test>');
    replies.mailSoft = await c.cmd('MAIL FROM:<busy@sender.test>');
    for (const subject of ['spam offer', 'tempfail', 'noqueue']) {
        assert.equal((await c.cmd('MAIL FROM:<alice@sender.test>')).code, 250);
        assert.equal((await c.cmd('RCPT TO:<bob@rcpt.test>')).code, 250);
        replies[subject] = (await c.data(h.message({ Subject: subject, 'Message-ID': `<${subject.replace(' ', '-')}@sender.test>` })))[1];
    }
    await c.cmd('QUIT');
    assert.deepEqual(Object.values(replies).map(r => r.code), [550, 450, 550, 450, 451]);

    const ev = await transactions(helo, 5);
    const [mail, mailSoft, spam, tempfail, noqueue] = ev;
    assert.deepEqual(
        ev.map(t => [t.outcome, t.code, t.stage, t.plugin]),
        [
            ['refused', 550, 'mail', 'test_policy'],
            ['deferred', 450, 'mail', 'test_policy'],
            ['refused', 550, 'data_post', 'test_policy'],
            ['deferred', 450, 'data_post', 'test_policy'],
            ['deferred', 451, 'queue', undefined]
        ]
    );
    assert.equal(mail.reply, replies.mail.text);
    assert.equal(mail.reply, 'Sender blocked');
    assert.equal(mailSoft.reply, replies.mailSoft.text);
    assert.equal(mailSoft.reply, 'sender <busy@sender.test> denied');
    assert.deepEqual(mail.recipients, []);
    assert.equal(spam.reply, 'Looks like spam');
    assert.equal(tempfail.reply, replies.tempfail.text);
    assert.equal(tempfail.reply, 'Try again later we are busy', 'a reply of two lines');
    assert.equal(noqueue.reply, replies.noqueue.text);
    assert.equal(spam.message_id, '<spam-offer@sender.test>');
    assert.ok(spam.size > 0 && spam.data_end_ms >= spam.data_start_ms);
    assert.deepEqual(ev.map(t => t.transaction_id.split('.')[1]), ['1', '2', '3', '4', '5']);
    assert.equal((await connectionEvent(helo)).transactions, 5);
});

test('every recipient refused: the transaction is refused with the last refusal; deferred if none was final', async () => {
    const helo = 'norcpt.client.test';
    const c = await h.SmtpClient.connect(haraka.port);
    await c.cmd(`EHLO ${helo}`);
    await c.cmd('MAIL FROM:<alice@sender.test>');
    await c.cmd('RCPT TO:<later@rcpt.test>');
    const last = await c.cmd('RCPT TO:<nobody@rcpt.test>');
    const data = await c.cmd('DATA'); // no recipients: Haraka answers 503 without a hook
    assert.equal(data.code, 503);
    await c.cmd('RSET');
    await c.cmd('MAIL FROM:<alice@sender.test>');
    await c.cmd('RCPT TO:<later@rcpt.test>');
    await c.cmd('QUIT');

    const [refused, deferred] = await transactions(helo, 2);
    assert.equal(refused.outcome, 'refused');
    assert.equal(refused.code, 550);
    assert.equal(refused.reply, last.text);
    assert.equal(refused.plugin, 'test_policy');
    assert.equal(refused.stage, 'rcpt');
    assert.equal(refused.data_start_ms, undefined);
    assert.equal(deferred.outcome, 'deferred');
    assert.equal(deferred.code, 450);
});

test('the client goes away: aborted, after RCPT (QUIT) and in the middle of DATA (dropped)', async () => {
    const helo = 'gone.client.test';
    const c = await h.SmtpClient.connect(haraka.port);
    await c.cmd(`EHLO ${helo}`);
    await c.cmd('MAIL FROM:<alice@sender.test>');
    await c.cmd('RCPT TO:<bob@rcpt.test>');
    await c.cmd('RSET');
    await c.cmd('MAIL FROM:<alice@sender.test>');
    await c.cmd('RCPT TO:<bob@rcpt.test>');
    assert.equal((await c.cmd('DATA')).code, 354);
    c.write('Subject: half\r\n\r\nhalf a message\r\n');
    await h.sleep(100);
    c.close();

    const [rset, dropped] = await transactions(helo, 2);
    assert.equal(rset.outcome, 'aborted');
    assert.equal(rset.stage, 'rcpt');
    assert.equal(rset.code, undefined);
    assert.deepEqual(rset.recipients.map(r => r.outcome), ['accepted']);
    assert.equal(dropped.outcome, 'aborted');
    assert.equal(dropped.stage, 'data');
    assert.ok(dropped.data_start_ms > 0);
    assert.equal(dropped.message_id, undefined);
    const conn = await connectionEvent(helo);
    assert.equal(conn.outcome, 'accepted');
});

test('a recipient whose RCPT is never answered (the client drops): aborted, no reply', async () => {
    const helo = 'slow.client.test';
    const c = await h.SmtpClient.connect(haraka.port);
    await c.cmd(`EHLO ${helo}`);
    await c.cmd('MAIL FROM:<alice@sender.test>');
    await c.cmd('RCPT TO:<bob@rcpt.test>');
    c.write('RCPT TO:<slow@rcpt.test>\r\n'); // the policy answers after 2 s
    await h.sleep(200);
    c.close();
    const [t] = await transactions(helo, 1);
    assert.equal(t.outcome, 'aborted');
    assert.deepEqual(
        t.recipients.map(r => [r.address, r.outcome, r.code]),
        [
            ['bob@rcpt.test', 'accepted', 250],
            ['slow@rcpt.test', 'aborted', undefined]
        ]
    );
});

test('no Message-ID header: none is reported (Haraka adds none to inbound mail)', async () => {
    const helo = 'nomid.client.test';
    const c = await h.SmtpClient.connect(haraka.port);
    await c.cmd(`EHLO ${helo}`);
    await c.cmd('MAIL FROM:<>');
    await c.cmd('RCPT TO:<bob@rcpt.test>');
    const [, final] = await c.data(h.message({ 'Message-ID': null }));
    assert.equal(final.code, 250);
    await c.cmd('QUIT');
    const [t] = await transactions(helo, 1);
    assert.equal(t.outcome, 'accepted');
    assert.equal(t.message_id, undefined);
    assert.equal(t.mail_from, '', 'the null sender');
});

test('pipelining: the envelope sent at once gets the same outcomes', async () => {
    const helo = 'pipe.client.test';
    const c = await h.SmtpClient.connect(haraka.port);
    const ehlo = await c.cmd(`EHLO ${helo}`);
    assert.ok(ehlo.lines.includes('PIPELINING'));
    c.write('MAIL FROM:<alice@sender.test>\r\nRCPT TO:<bob@rcpt.test>\r\nRCPT TO:<nobody@rcpt.test>\r\nRCPT TO:<later@rcpt.test>\r\nDATA\r\n');
    const replies = [];
    for (let i = 0; i < 5; i++) {
        replies.push(await c.read());
    }
    assert.deepEqual(replies.map(r => r.code), [250, 250, 550, 450, 354]);
    c.write(h.message({ 'Message-ID': '<pipe@sender.test>' }) + '\r\n.\r\n');
    const final = await c.read();
    assert.equal(final.code, 250);
    await c.cmd('QUIT');
    const [t] = await transactions(helo, 1);
    assert.deepEqual(
        t.recipients.map(r => [r.outcome, r.code, r.reply]),
        replies.slice(1, 4).map((r, i) => [['accepted', 'refused', 'deferred'][i], r.code, r.text])
    );
});

test('message too big: refused after the data, at max_data_exceeded', async () => {
    const helo = 'big.client.test';
    const c = await h.SmtpClient.connect(haraka.port);
    await c.cmd(`EHLO ${helo}`);
    await c.cmd('MAIL FROM:<alice@sender.test>');
    await c.cmd('RCPT TO:<bob@rcpt.test>');
    const [, final] = await c.data(h.message({ 'Message-ID': '<big@sender.test>' }, 'x'.repeat(70) + '\r\n'.repeat(1) + ('y'.repeat(70) + '\r\n').repeat(2000)));
    assert.equal(final.code, 550);
    await c.cmd('QUIT');
    const [t] = await transactions(helo, 1);
    assert.equal(t.outcome, 'refused');
    assert.equal(t.stage, 'max_data_exceeded');
    assert.equal(t.reply, final.text);
    assert.ok(t.size > 100000);
});

test('a refused connection: the greeting refusal as the client saw it', async () => {
    const c = await h.SmtpClient.connect(refusePort);
    assert.equal(c.greeting.code, 554);
    await h.waitFor(() => c.closed, 5000, 'Haraka to hang up');
    const ev = await h.waitFor(() => sidecar.events('haraka.connection').find(e => e.local_port === refusePort), 10000, 'the refused connection');
    assert.equal(ev.outcome, 'refused');
    assert.equal(ev.transactions, 0);
    assert.deepEqual(ev.refusals.map(r => [r.stage, r.code, r.reply, r.plugin]), [['connect', 554, c.greeting.text, 'test_policy']]);
    assert.equal(ev.helo, undefined);
});

test('a refused HELO is a refusal of the connection, which goes on', async () => {
    const helo = 'good.after.bad.test';
    const c = await h.SmtpClient.connect(haraka.port);
    const bad = await c.cmd('HELO bad.helo');
    assert.equal(bad.code, 550);
    assert.equal((await c.cmd(`EHLO ${helo}`)).code, 250);
    await c.cmd('QUIT');
    const ev = await connectionEvent(helo);
    assert.equal(ev.outcome, 'accepted');
    assert.deepEqual(ev.refusals.map(r => [r.stage, r.code, r.reply, r.plugin]), [['helo', 550, bad.text, 'test_policy']]);
});

test("log_lines: Haraka's own lines, with the transaction's uuid and the plugin that logged them", async () => {
    const helo = 'logs.client.test';
    const c = await h.SmtpClient.connect(haraka.port);
    await c.cmd(`EHLO ${helo}`);
    await c.cmd('MAIL FROM:<alice@sender.test>');
    await c.cmd('RCPT TO:<nobody@rcpt.test>');
    await c.cmd('QUIT');
    const [t] = await transactions(helo, 1);
    const lines = await h.waitFor(() => {
        const found = sidecar.events('haraka.log').filter(e => e.uuid === t.transaction_id);
        return found.some(e => /recipient/.test(e.message)) && found;
    }, 10000, 'log lines of the transaction');
    const refusal = lines.find(e => /nobody@rcpt.test/.test(e.message));
    assert.ok(refusal, JSON.stringify(lines));
    assert.ok(['INFO', 'NOTICE'].includes(refusal.level));
    assert.ok(lines.every(e => e.level !== 'DEBUG' && e.level !== 'PROTOCOL'), 'log_level info: nothing more verbose');
    assert.ok(sidecar.events('haraka.log').some(e => e.origin === 'otel-mta' || e.origin === 'core'));
});
