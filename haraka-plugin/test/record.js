'use strict';

// Records what the plugin sends from a real Haraka 3.3.4, for the sidecar's
// mapping tests (tests/inbound/test_inbound_mapping.py, test_haraka_final.py):
// inbound sessions of every outcome, a refused connection, Haraka's log lines,
// and two relayed messages followed until every recipient is final: one with
// a recipient delivered, one bounced and one greylisted then delivered on the
// retry; one to two domains, one delivered and one deferred until Haraka
// gives up and bounces it (temp_fail_intervals of one 5 s retry).
//
//   node test/record.js > ../tests/fixtures/haraka/batches.json

const h = require('./helpers');

async function session(port, helo, steps) {
    const c = await h.SmtpClient.connect(port);
    await c.cmd(`EHLO ${helo}`);
    for (const step of steps) {
        if (typeof step === 'string') {
            await c.cmd(step);
        } else {
            await c.data(step.data);
        }
    }
    await c.cmd('QUIT');
}

async function main() {
    const sidecar = await h.startSidecar();
    const sink = await h.startSmtpSink([
        ['grey@', '451 4.7.1 Greylisted, try again later'],
        ['busy@', '421 4.7.0 Too many connections, try again later'],
        ['gone@', '550 5.1.1 No such user']
    ]);
    const refusePort = await h.freePort();
    const haraka = await h.startHaraka({
        ports: [await h.freePort(), refusePort],
        plugins: ['otel-mta', 'test_policy', 'rcpt_to.in_host_list', 'queue/discard'],
        files: {
            'otel-mta.ini': `url=${sidecar.url}\n[buffer]\nflush_interval_ms=50\n[events]\nlog_lines=true\n`,
            'test_policy.ini': `refuse_port=${refusePort}\nrelay_helo=relay.client.test\nmx=127.0.0.1:${sink.port}\n`,
            'outbound.ini': 'local_mx_ok=true\nenable_tls=false\ntemp_fail_intervals=5s\n'
        }
    });
    try {
        const mail = 'MAIL FROM:<alice@sender.test>';
        await session(haraka.port, 'inbound.client.test', [
            mail,
            'RCPT TO:<bob@rcpt.test>',
            'RCPT TO:<nobody@rcpt.test>',
            'RCPT TO:<later@rcpt.test>',
            'RCPT TO:<x@other.test>',
            { data: h.message({ 'Message-ID': '<rec-1@Sender.TEST>' }) },
            mail,
            'RCPT TO:<carol@rcpt.test>',
            { data: h.message({ 'Message-ID': '<rec-2@sender.test>', Subject: 'spam' }) },
            'MAIL FROM:<blocked@sender.test>',
            mail,
            'RCPT TO:<nobody@rcpt.test>',
            'RSET'
        ]);
        // no queue plugin takes it: 451 from Haraka itself
        await session(haraka.port, 'noqueue.client.test', [mail, 'RCPT TO:<bob@rcpt.test>', { data: h.message({ 'Message-ID': '<rec-3@sender.test>', Subject: 'noqueue' }) }]);
        await session(haraka.port, 'relay.client.test', [
            mail,
            'RCPT TO:<bob@dest.test>',
            'RCPT TO:<grey@dest.test>',
            'RCPT TO:<gone@dest.test>',
            { data: h.message({ 'Message-ID': '<rec-relay@sender.test>' }) },
            mail,
            'RCPT TO:<dave@dest.test>',
            'RCPT TO:<busy@slow.test>',
            { data: h.message({ 'Message-ID': '<rec-relay-2@sender.test>' }) }
        ]);
        const refused = await h.SmtpClient.connect(refusePort);
        await h.waitFor(() => refused.closed, 5000, 'the refused connection to close');
        const deliveries = (to, outcome) =>
            sidecar.events('haraka.delivery').filter(e => e.outcome === outcome && e.recipients.some(r => r.address === to));
        await h.waitFor(() => deliveries('grey@dest.test', 'deferred').length, 20000, 'the greylisting');
        sink.rules = sink.rules.filter(([s]) => s !== 'grey@'); // lets it through on the retry
        await h.waitFor(
            () => deliveries('grey@dest.test', 'delivered').length && deliveries('busy@slow.test', 'bounced').length,
            30000,
            'the retries: grey delivered, busy bounced'
        );
        // and the bounces (DSNs) Haraka sends back to the sender: messages of its own
        await h.waitFor(() => deliveries('alice@sender.test', 'delivered').length >= 2, 20000, 'the two bounces delivered');
        await h.sleep(500);
        await haraka.stop('SIGTERM');
        const batches = sidecar.batches.map(b => Object.assign({}, b, { events: b.events.filter(e => e.type !== 'plugin.health' || e.sent > 0) }));
        process.stdout.write(JSON.stringify(batches, null, 1) + '\n');
    } finally {
        await haraka.stop();
        await sink.close();
        await sidecar.close();
    }
}

main().catch(err => {
    console.error(err);
    process.exit(1);
});
