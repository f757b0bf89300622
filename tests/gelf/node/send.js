'use strict';
// Sends GELF messages exactly as ZoneMTA and WildDuck do: `new Gelf(options)`
// and `gelf.emit('gelf.log', message)` (zlib-deflated UDP, chunked above
// 8154 bytes for connection 'lan', 1420 for 'wan').
// stdin: one JSON line {"options": {...}, "messages": [...]}; exits when all are sent.
const Gelf = require('gelf');

let input = '';
process.stdin.on('data', d => (input += d));
process.stdin.on('end', () => {
    const { options, messages } = JSON.parse(input);
    const gelf = new Gelf(options);
    let pending = messages.length;
    gelf.on('error', err => {
        console.error('gelf error:', err.message);
        process.exitCode = 1;
    });
    const done = () => {
        if (--pending === 0) {
            gelf.closeSocket();
        }
    };
    // one at a time, like a logger under light load; each send completes before the next
    const next = i => {
        if (i >= messages.length) return;
        gelf.sendMessage(gelf.sanitizeMsg(messages[i]), err => {
            if (err) console.error('send failed:', err.message);
            done();
            setTimeout(() => next(i + 1), 1);
        });
    };
    if (!messages.length) return gelf.closeSocket();
    next(0);
});
