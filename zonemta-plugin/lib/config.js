'use strict';

// Plugin settings: defaults, bounds and the endpoint URL. A bad value falls
// back to its default with a warning; it never stops ZoneMTA from starting.

const { URL } = require('url');

// Hooks that produce events or phase timings. sender:headers is not here: it
// is registered only for `traceHeader`.
const HOOKS = [
    'log:entry',
    'message:headers',
    'message:queue',
    'sender:fetch',
    'sender:connecting',
    'sender:connect',
    'sender:tlserror',
    'sender:connected',
    'sender:connection',
    'sender:responseError',
    'sender:delivered',
    'queue:release',
    'queue:bounce',
    'queue:delayed'
];

// [default, min, max]
const NUMBERS = {
    bufferSize: [10000, 10, 1000000],
    flushIntervalMs: [1000, 10, 60000],
    maxBatch: [500, 1, 10000],
    maxBatchBytes: [1024 * 1024, 1024, 64 * 1024 * 1024],
    requestTimeoutMs: [5000, 100, 120000],
    maxRetries: [10, 0, 1000],
    retryBaseMs: [250, 1, 60000],
    retryMaxMs: [30000, 1, 3600000],
    shutdownTimeoutMs: [2000, 0, 30000],
    healthIntervalMs: [30000, 1000, 3600000],
    phaseMapSize: [10000, 10, 1000000],
    phaseMaxAgeMs: [15 * 60 * 1000, 1000, 24 * 3600 * 1000],
    deliveredWaitMs: [5000, 0, 60000]
};

const DEFAULT_URL = 'http://127.0.0.1:9477';

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

function load(input, env, warn) {
    input = input && typeof input === 'object' ? input : {};
    env = env || {};
    warn = warn || (() => {});
    const cfg = {};

    for (const [key, [def, min, max]] of Object.entries(NUMBERS)) {
        const raw = input[key];
        if (raw === undefined || raw === null || raw === '') {
            cfg[key] = def;
            continue;
        }
        const n = Number(raw);
        if (!Number.isFinite(n) || n < min || n > max) {
            warn(`${key}=${JSON.stringify(raw)} is not a number in [${min}, ${max}], using ${def}`);
            cfg[key] = def;
        } else {
            cfg[key] = Math.floor(n);
        }
    }

    const base = typeof input.url === 'string' && input.url.trim() ? input.url.trim() : DEFAULT_URL;
    try {
        cfg.url = eventsUrl(base);
    } catch (err) {
        warn(`url=${JSON.stringify(base)} is invalid (${err.message}), using ${DEFAULT_URL}`);
        cfg.url = eventsUrl(DEFAULT_URL);
    }

    // The key usually comes from a Kubernetes Secret, hence the env fallback.
    const apiKey = input.apiKey !== undefined && input.apiKey !== null ? input.apiKey : env.OTEL_MTA_EVENTS_API_KEY;
    cfg.apiKey = apiKey ? String(apiKey) : '';

    if (input.hooks === undefined || input.hooks === null || input.hooks === true || input.hooks === '*') {
        cfg.hooks = new Set(HOOKS);
    } else {
        const list = [].concat(input.hooks).map(h => String(h).toLowerCase().trim());
        cfg.hooks = new Set();
        for (const name of list) {
            const known = HOOKS.find(h => h.toLowerCase() === name);
            if (known) {
                cfg.hooks.add(known);
            } else if (name) {
                warn(`hooks: unknown hook ${JSON.stringify(name)} ignored`);
            }
        }
    }

    cfg.traceHeader = input.traceHeader === true || input.traceHeader === 'true';
    cfg.handleSignals = input.handleSignals !== false;
    return cfg;
}

module.exports = { load, HOOKS, NUMBERS, DEFAULT_URL };
