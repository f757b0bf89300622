'use strict';

// The SMTP reply Haraka gives when a plugin refuses at a hook: the code and
// text that connection.js's <hook>_respond() sends for a DENY-family return
// value (Haraka 3.3.4), so the report says what the client was told. The
// test suite compares these with what a real Haraka answers.
//
// Where the exact reply is at hand (connection.last_response, the reply that
// ended a transaction or a connection) it is used instead: parseReply().

// haraka-constants (the plugin runs without Haraka's own node_modules on its path)
const DENY = 902;
const DENYSOFT = 903;
const DENYDISCONNECT = 904;
const DENYSOFTDISCONNECT = 909;

const PERMANENT = new Set([DENY, DENYDISCONNECT]);
const DENIALS = new Set([DENY, DENYSOFT, DENYDISCONNECT, DENYSOFTDISCONNECT]);

const CAP = 1024;

// hook -> [permanent code, temporary code, permanent default, temporary default]
// a function default gets the refused object's formatted address
const TABLE = {
    connect: [554, 421, 'Your mail is not welcome here', 'Come back later'],
    lookup_rdns: [554, 421, 'rDNS Lookup Failed', 'rDNS Temporary Failure'],
    helo: [550, 450, 'HELO denied', 'HELO denied'],
    ehlo: [550, 450, 'EHLO denied', 'EHLO denied'],
    mail: [550, 450, addr => `sender ${addr} denied`, addr => `sender ${addr} denied`],
    rcpt: [550, 450, addr => `recipient ${addr} denied`, addr => `recipient ${addr} denied`],
    rcpt_ok: [550, 450, addr => `recipient ${addr} denied`, addr => `recipient ${addr} denied`],
    data: [554, 451, 'Message denied', 'Message denied'],
    data_post: [550, 450, 'Message denied', 'Message denied temporarily'],
    queue: [550, 450, 'Message denied', 'Message denied temporarily'],
    queue_outbound: [550, 450, 'Message denied', 'Message denied temporarily'],
    unrecognized_command: [500, 421, 'Unrecognized command', 'Unrecognized command'],
    vrfy: [550, 450, 'Access Denied', 'Lookup Failed'],
    noop: [500, 500, 'Stop wasting my time', 'Stop wasting my time']
};

function cap(s) {
    return s.length > CAP ? s.slice(0, CAP) : s;
}

/** Text of a reply message as respond() sends it: lines joined by a space. */
function messageText(msg) {
    if (msg === undefined || msg === null || msg === '') {
        return '';
    }
    if (Array.isArray(msg)) {
        return msg.map(m => String(m).trim()).filter(Boolean).join(' ');
    }
    return String(msg)
        .split(/\n/)
        .map(m => m.trim())
        .filter(Boolean)
        .join(' ');
}

function isDsn(msg) {
    return !!msg && typeof msg === 'object' && !Array.isArray(msg) && msg.constructor && msg.constructor.name === 'DSN';
}

/**
 * {code, text} of the reply to a DENY-family `retval` at `hook`, or null when
 * retval is not a denial. `address` (formatted, <a@b>) fills the mail/rcpt
 * defaults; `uuid` is the transaction's, which queue replies end with.
 */
function denialReply(hook, retval, msg, address, uuid) {
    if (!DENIALS.has(retval)) {
        return null;
    }
    const row = TABLE[hook];
    const permanent = PERMANENT.has(retval);
    let code = row ? row[permanent ? 0 : 1] : permanent ? 550 : 450;
    if (hook === 'unrecognized_command' && retval === DENYDISCONNECT) {
        code = 521;
    }
    let text;
    if (isDsn(msg)) {
        text = messageText(msg.reply);
        if (hook !== 'queue' && hook !== 'queue_outbound' && /^[245]\d\d$/.test(String(msg.code))) {
            code = Number(msg.code); // respond() takes a DSN's code, except in queue replies (made strings first)
        }
    } else {
        text = messageText(msg);
    }
    if (!text && row) {
        const def = row[permanent ? 2 : 3];
        text = typeof def === 'function' ? def(address || '<>') : def;
    }
    if (!text) {
        text = permanent ? 'denied' : 'denied temporarily';
    }
    if ((hook === 'queue' || hook === 'queue_outbound') && uuid) {
        text = `${text} (${uuid})`;
    }
    return { code, text: cap(text) };
}

/**
 * {code, text} of a reply as Haraka wrote it ("550-line\r\n550 line\r\n"),
 * or null. Continuation lines are joined by a space.
 */
function parseReply(raw) {
    if (typeof raw !== 'string' || raw.length < 3) {
        return null;
    }
    const m = /^([2-5]\d\d)[ -]?/.exec(raw);
    if (!m) {
        return null;
    }
    const lines = raw.split(/\r?\n/).filter(Boolean);
    const text = lines
        .map(l => l.replace(/^\d{3}[ -]?/, '').trim())
        .filter(Boolean)
        .join(' ');
    return { code: Number(m[1]), text: cap(text) };
}

module.exports = { denialReply, parseReply, messageText, DENY, DENYSOFT, DENYDISCONNECT, DENYSOFTDISCONNECT, DENIALS };
