'use strict';

// Haraka's own log lines (its `log` hook), as haraka.log events: the level,
// the message, and the connection or transaction uuid and the plugin that
// logged it. Haraka 3.3.4 hands the hook the formatted line only (item.data):
// `[LEVEL] [uuid] [origin] message` by default, a JSON object with
// log.ini format=json, `key=value` pairs with format=logfmt; all three are
// read back here. The hook sees every line that passes Haraka's loglevel; we
// send those at `log_level` or more severe. Nothing here may log: it would
// call this hook again.

const { LOG_LEVELS } = require('./config');

const MESSAGE_MAX = 8192;
const RANK = Object.fromEntries(LOG_LEVELS.map((l, i) => [l, i]));

class LogLines {
    /**
     * @param {object} opts
     * @param {function} opts.push adds an event to the buffer
     * @param {string} opts.level the least severe level sent (config LOG_LEVELS)
     */
    constructor(opts) {
        this.push = opts.push;
        this.min = RANK[opts.level] === undefined ? RANK.INFO : RANK[opts.level];
    }

    /** log hook: item {level, data, obj}. */
    line(item, now) {
        if (!item || typeof item !== 'object') {
            return;
        }
        const level = typeof item.level === 'string' ? item.level.toUpperCase() : '';
        const rank = RANK[level];
        if (rank === undefined || rank < this.min) {
            return;
        }
        const data = typeof item.data === 'string' ? item.data : '';
        if (!data) {
            return;
        }
        const event = { id: '', type: 'haraka.log', time_ms: now, level, message: '' };
        let m;
        if (data.charCodeAt(0) === 91 /* [ */ && (m = DEFAULT_LINE.exec(data))) {
            event.message = m[4];
            setIds(event, m[2], m[3]);
        } else if (data.charCodeAt(0) === 123 /* { */) {
            fromObject(event, data);
        } else if (data.startsWith('level=') && (m = LOGFMT_IDS.exec(data))) {
            const rest = data.slice(m[0].length);
            const mm = LOGFMT_MESSAGE.exec(rest);
            event.message = mm ? (unquote(mm[1]) + ' ' + rest.slice(mm[0].length)).trim() : rest;
            setIds(event, unquote(m[1]), unquote(m[2]));
        } else {
            event.message = data; // a line of Haraka's start-up, before any plugin is loaded
        }
        if (!event.message) {
            return;
        }
        if (event.message.length > MESSAGE_MAX) {
            event.message = event.message.slice(0, MESSAGE_MAX);
        }
        this.push(event);
    }
}

// logger.js: `[${level}] [${uuid}] [${origin}] ${message}`
const DEFAULT_LINE = /^\[([A-Z]+)\] \[([^\]]*)\] \[([^\]]*)\] ?([\s\S]*)$/;
// logger.js stringify(): level=X uuid=Y origin=Z first, quoted when they need it
const LOGFMT_IDS = /^level=\S+ uuid=("(?:[^"\\]|\\.)*"|\S*) origin=("(?:[^"\\]|\\.)*"|\S*) ?/;
const LOGFMT_MESSAGE = /^message=("(?:[^"\\]|\\.)*"|\S*) ?/;

function unquote(v) {
    if (v.startsWith('"')) {
        try {
            return JSON.parse(v);
        } catch (err) {
            return v.slice(1, -1);
        }
    }
    return v;
}

function setIds(event, uuid, origin) {
    if (uuid && uuid !== '-' && uuid.length <= 64) {
        event.uuid = uuid;
    }
    if (origin && origin.length <= 128) {
        event.origin = origin;
    }
}

function fromObject(event, data) {
    let obj;
    try {
        obj = JSON.parse(data);
    } catch (err) {
        event.message = data;
        return;
    }
    if (!obj || typeof obj !== 'object') {
        event.message = data;
        return;
    }
    event.message = (typeof obj.message === 'string' ? obj.message : '') + extraFields(obj);
    setIds(event, typeof obj.uuid === 'string' ? obj.uuid : '', typeof obj.origin === 'string' ? obj.origin : '');
    event.message = event.message.trim();
}

const OWN = new Set(['level', 'uuid', 'origin', 'message']);

// With log.ini format=json or logfmt, Haraka merges a line's fields into the
// object instead of its message (the default format writes them as key=value):
// the same key=value text here, so every format reads the same.
function extraFields(obj) {
    let out = '';
    for (const key in obj) {
        if (OWN.has(key)) {
            continue;
        }
        const v = obj[key];
        if (v === undefined || v === null || typeof v === 'function') {
            continue;
        }
        let s = typeof v === 'object' ? safeJson(v) : String(v);
        if (s === '' || /[\s="]/.test(s)) {
            s = JSON.stringify(s);
        }
        out += ` ${key}=${s}`;
    }
    return out;
}

function safeJson(v) {
    try {
        return JSON.stringify(v);
    } catch (err) {
        return String(v);
    }
}

module.exports = { LogLines };
