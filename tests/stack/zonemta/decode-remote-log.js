'use strict';
// Reference decoder for ZoneMTA remote-log datagrams: decodes with msgpack-js,
// the very package ZoneMTA encodes with. Reads one base64 datagram per stdin
// line, writes one JSON object per line. msgpack-js has a code for
// `undefined` (0xc4) that JSON lacks: such values come out as {"$undefined":true};
// Buffers come out as {"$base64": "..."}.
const msgpack = require('msgpack-js');
const readline = require('readline');

const mark = value => {
    if (value === undefined) {
        return { $undefined: true };
    }
    if (Buffer.isBuffer(value)) {
        return { $base64: value.toString('base64') };
    }
    if (Array.isArray(value)) {
        return value.map(mark);
    }
    if (value && typeof value === 'object') {
        const out = {};
        for (const key of Object.keys(value)) {
            out[key] = mark(value[key]);
        }
        return out;
    }
    return value;
};

readline.createInterface({ input: process.stdin }).on('line', line => {
    if (!line.trim()) {
        return;
    }
    let out;
    try {
        out = mark(msgpack.decode(Buffer.from(line, 'base64')));
    } catch (err) {
        out = { $error: err.message };
    }
    process.stdout.write(JSON.stringify(out) + '\n');
});
