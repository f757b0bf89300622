'use strict';

// Records what the plugin sends from a real Haraka 3.3.4, for the sidecar's
// mapping tests (tests/inbound/test_inbound_mapping.py): inbound sessions of
// every outcome, a refused connection, a relayed message delivered, deferred
// and bounced, and Haraka's log lines.
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
        ['gone@', '550 5.1.1 No such user']
    ]);
    const refusePort = await h.freePort();
    const haraka = await h.startHaraka({
        ports: [await h.freePort(), refusePort],
        plugins: ['otel-mta', 'test_policy', 'rcpt_to.in_host_list', 'queue/discard'],
        files: {
            'otel-mta.ini': `url=${sidecar.url}\n[buffer]\nflush_interval_ms=50\n[events]\nlog_lines=true\n`,
            'test_policy.ini': `refuse_port=${refusePort}\nrelay_helo=relay.client.test\nmx=127.0.0.1:${sink.port}\n`,
            'outbound.ini': 'local_mx_ok=true\nenable_tls=false\n'
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
            { data: h.message({ 'Message-ID': '<rec-relay@sender.test>' }) }
        ]);
        const refused = await h.SmtpClient.connect(refusePort);
        await h.waitFor(() => refused.closed, 5000, 'the refused connection to close');
        await h.waitFor(() => sidecar.events('haraka.delivery').length >= 3, 20000, 'relay attempts');
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
