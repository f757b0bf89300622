'use strict';

// Settings from config/otel-mta.ini (Haraka's convention: the plugin's own
// config/otel-mta.ini gives the defaults, the Haraka folder's overrides them),
// then the environment: OTEL_MTA_EVENTS_URL and OTEL_MTA_EVENTS_API_KEY win
// over the file, so a container needs no file. A bad value falls back to its
// default with a warning; it never stops Haraka from starting.
//
// The result has the field names lib/reporter.js reads (shared with the
// ZoneMTA plugin), plus what the Haraka hooks need.

const { URL } = require('url');

// ini [section] key -> [cfg field, default, min, max]
const NUMBERS = {
    'buffer.size': ['bufferSize', 10000, 10, 1000000],
    'buffer.flush_interval_ms': ['flushIntervalMs', 1000, 10, 60000],
    'buffer.max_batch': ['maxBatch', 500, 1, 10000],
    'buffer.max_batch_bytes': ['maxBatchBytes', 1024 * 1024, 1024, 64 * 1024 * 1024],
    'transport.request_timeout_ms': ['requestTimeoutMs', 5000, 100, 120000],
    'transport.max_retries': ['maxRetries', 10, 0, 1000],
    'transport.retry_base_ms': ['retryBaseMs', 250, 1, 60000],
    'transport.retry_max_ms': ['retryMaxMs', 30000, 1, 3600000],
    'transport.shutdown_timeout_ms': ['shutdownTimeoutMs', 2000, 0, 30000],
    'transport.health_interval_ms': ['healthIntervalMs', 30000, 1000, 3600000],
    'events.max_recipients': ['maxRecipients', 100, 1, 1000]
};

// ini [section] key -> [cfg field, default]
const BOOLEANS = {
    'events.outbound': ['outbound', true],
    'events.log_lines': ['logLines', false],
    'transport.handle_signals': ['handleSignals', true]
};

// Haraka's log levels, most verbose first (logger.js); a line is sent when its
// level is at log_level or more severe.
const LOG_LEVELS = ['DATA', 'PROTOCOL', 'DEBUG', 'INFO', 'NOTICE', 'WARN', 'ERROR', 'CRIT', 'ALERT', 'EMERG'];

const DEFAULT_URL = 'http://127.0.0.1:9477';

/** The `booleans` option for Haraka's config.get('otel-mta.ini', ...). */
const INI_BOOLEANS = Object.entries(BOOLEANS).map(([key, [, def]]) => (def ? '+' : '-') + key);

function eventsUrl(base) {
    const url = new URL(base);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
        throw new Error(`unsupported protocol ${url.protocol}`);
    }
    if (!/\/v1\/events\/?$/.test(url.pathname)) {
        url.pathname = url.pathname.replace(/\/+$/, '') + '/v1/events';
    }
    return url;
}

function lookup(ini, dotted) {
    const [section, key] = dotted.split('.');
    const s = ini && typeof ini === 'object' ? ini[section] : null;
    return s && typeof s === 'object' ? s[key] : undefined;
}

function text(value) {
    return value === undefined || value === null ? '' : String(value).trim();
}

/**
 * @param {object} ini what Haraka's config.get('otel-mta.ini') returned ({main: {...}, <section>: {...}})
 * @param {object} env process.env
 * @param {function} warn called with a message for each value that was replaced
 */
function load(ini, env, warn) {
    ini = ini && typeof ini === 'object' ? ini : {};
    env = env || {};
    warn = warn || (() => {});
    const main = ini.main && typeof ini.main === 'object' ? ini.main : {};
    const cfg = {};

    for (const [key, [field, def, min, max]] of Object.entries(NUMBERS)) {
        const raw = text(lookup(ini, key));
        if (!raw) {
            cfg[field] = def;
            continue;
        }
        const n = Number(raw);
        if (!Number.isFinite(n) || n < min || n > max) {
            warn(`${key}=${JSON.stringify(raw)} is not a number in [${min}, ${max}], using ${def}`);
            cfg[field] = def;
        } else {
            cfg[field] = Math.floor(n);
        }
    }

    for (const [key, [field, def]] of Object.entries(BOOLEANS)) {
        const raw = lookup(ini, key);
        if (raw === undefined || raw === null || raw === '') {
            cfg[field] = def;
        } else if (typeof raw === 'boolean') {
            cfg[field] = raw;
        } else if (/^(true|yes|on|1)$/i.test(String(raw).trim())) {
            cfg[field] = true;
        } else if (/^(false|no|off|0)$/i.test(String(raw).trim())) {
            cfg[field] = false;
        } else {
            warn(`${key}=${JSON.stringify(raw)} is not true or false, using ${def}`);
            cfg[field] = def;
        }
    }

    const level = text(lookup(ini, 'events.log_level')).toUpperCase() || 'INFO';
    cfg.logLevel = LOG_LEVELS.includes(level) ? level : 'INFO';
    if (cfg.logLevel !== level) {
        warn(`events.log_level=${JSON.stringify(level.toLowerCase())} is not one of ${LOG_LEVELS.join(', ').toLowerCase()}, using info`);
    }

    const fromEnv = text(env.OTEL_MTA_EVENTS_URL);
    const base = fromEnv || text(main.url) || DEFAULT_URL;
    const where = fromEnv ? 'OTEL_MTA_EVENTS_URL' : 'url';
    try {
        cfg.url = eventsUrl(base);
    } catch (err) {
        warn(`${where}=${JSON.stringify(base)} is invalid (${err.message}), using ${DEFAULT_URL}`);
        cfg.url = eventsUrl(DEFAULT_URL);
    }

    // The key usually comes from a Kubernetes Secret as an environment variable.
    cfg.apiKey = text(env.OTEL_MTA_EVENTS_API_KEY) || text(main.api_key);
    return cfg;
}

module.exports = { load, NUMBERS, BOOLEANS, LOG_LEVELS, INI_BOOLEANS, DEFAULT_URL };
