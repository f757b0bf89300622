'use strict';

// ZoneMTA plugin: reports delivery events to the otel-mta sidecar.
//
// Every hook returns at once and never passes an error on: an observability
// plugin must not slow down or change a delivery. Events go into a bounded
// buffer that a timer ships in batches (lib/reporter.js).

const os = require('os');
const configLib = require('./lib/config');
const { Reporter } = require('./lib/reporter');
const { Lifecycle } = require('./lib/lifecycle');
const { PhaseTracker } = require('./lib/phases');
const events = require('./lib/events');
const traceIds = require('./lib/trace-ids');
const pkg = require('./package.json');

const TITLE = 'OTel MTA';
const LOG_PREFIX = 'OTelMTA';

// All reporters of this process (one per plugin load), flushed on shutdown.
const lifecycle = new Lifecycle();

function contextOf(app) {
    const ctx = app && app.manager && app.manager.context;
    return typeof ctx === 'string' && ctx ? ctx : 'unknown';
}

function pluginConfig(app) {
    return (app && app.config && typeof app.config === 'object' && app.config) || {};
}

// Wraps a handler so that whatever happens inside, the hook's callback is
// called with no error and nothing is thrown or rejected.
function safeHook(reporter, name, fn) {
    return function otelMtaHook() {
        const n = arguments.length;
        const next = n ? arguments[n - 1] : undefined;
        try {
            fn(arguments[0], arguments[1], arguments[2], arguments[3]);
        } catch (err) {
            reporter.counters.hook_errors++;
            reporter.warn('hook:' + name, '%s hook failed (delivery continues): %s', name, err && err.stack ? err.stack : err);
        }
        if (typeof next === 'function') {
            next();
        }
    };
}

// ZoneMTA >= 3 accepts a promise from init (wild-plugins also passes a
// callback, which we do not need). It always resolves: telemetry must never
// stop ZoneMTA from starting.
async function init(app) {
    try {
        setup(app);
    } catch (err) {
        try {
            app.logger.error(LOG_PREFIX, 'otel-mta plugin disabled: %s', err && err.stack ? err.stack : err);
        } catch (E) {
            // ignore
        }
    }
}

function setup(app) {
    const logger = app.logger;
    const context = contextOf(app);
    const cfg = configLib.load(pluginConfig(app), process.env, msg => logger && logger.error(LOG_PREFIX, 'config: %s', msg));
    lifecycle.shutdownTimeoutMs = cfg.shutdownTimeoutMs;

    const reporter = new Reporter({
        cfg,
        logger,
        logPrefix: LOG_PREFIX,
        schema: 'otel-mta.events/v1',
        userAgent: `zonemta-otel-mta/${pkg.version}`,
        source: {
            service: 'zonemta',
            instance: os.hostname(),
            pid: process.pid,
            context,
            plugin_version: pkg.version
        }
    });

    const hooks = cfg.hooks;
    const add = (name, fn) => app.addHook(name, safeHook(reporter, name, fn));
    const push = event => {
        if (event) {
            reporter.add(event);
        }
    };

    // Phase timing needs the sender hooks and the outcome from log:entry.
    const trackPhases = ['sender:fetch', 'sender:connecting', 'sender:connect', 'sender:connected', 'sender:connection'].some(h => hooks.has(h));
    const tracker = trackPhases
        ? new PhaseTracker({
              maxEntries: cfg.phaseMapSize,
              maxAgeMs: cfg.phaseMaxAgeMs,
              deliveredWaitMs: cfg.deliveredWaitMs,
              waitForDelivered: hooks.has('sender:delivered'),
              emit: push,
              counters: reporter.counters
          })
        : null;
    if (tracker) {
        reporter.onTick = now => tracker.sweep(now);
    }

    const reportLogEntries = hooks.has('log:entry');
    if (reportLogEntries || tracker) {
        add('log:entry', entry => {
            const now = Date.now();
            if (reportLogEntries) {
                push(events.logEntry(entry, now));
            }
            if (tracker && entry && entry.seq) {
                tracker.outcome(entry, now);
            }
        });
    }

    if (hooks.has('message:headers')) {
        add('message:headers', (envelope, messageInfo) => push(events.messageHeaders(envelope, messageInfo, Date.now())));
    }
    if (hooks.has('message:queue')) {
        add('message:queue', (envelope, messageInfo) => push(events.messageQueue(envelope, messageInfo, Date.now())));
    }
    if (hooks.has('queue:release')) {
        add('queue:release', (zone, data) => push(events.queueRelease(zone, data, Date.now())));
    }
    if (hooks.has('queue:bounce')) {
        add('queue:bounce', bounce => push(events.queueBounce(bounce, Date.now())));
    }
    if (hooks.has('queue:delayed')) {
        add('queue:delayed', (delivery, maildrop, options) => push(events.queueDelayed(delivery, options, Date.now())));
    }

    if (tracker) {
        const phaseHooks = {
            'sender:fetch': delivery => tracker.fetch(delivery, Date.now()),
            'sender:connecting': delivery => tracker.connecting(delivery, Date.now()),
            'sender:connect': (delivery, connOpts) => tracker.connect(delivery, connOpts, Date.now()),
            'sender:tlserror': (delivery, options, err) => tracker.tlsError(delivery, options, err, Date.now()),
            'sender:connected': (delivery, connection, options, secure) => tracker.connected(delivery, options, secure, Date.now()),
            'sender:connection': (delivery, connection) => tracker.connection(delivery, connection, Date.now()),
            'sender:responseError': (delivery, connection, err) => tracker.responseError(delivery, err, Date.now()),
            'sender:delivered': (delivery, info) => tracker.delivered(delivery, info, Date.now())
        };
        for (const [name, fn] of Object.entries(phaseHooks)) {
            if (hooks.has(name)) {
                add(name, fn);
            }
        }
    }

    if (cfg.traceHeader) {
        // sender:headers runs right before ZoneMTA's DKIM signing (lib/sender.js).
        add('sender:headers', delivery => addTraceHeaders(delivery));
    }

    lifecycle.add(reporter);
    reporter.start();
    if (cfg.handleSignals) {
        lifecycle.install();
    }
    if (logger && typeof logger.info === 'function') {
        logger.info(LOG_PREFIX, 'reporting %s hooks to %s (context %s)', hooks.size, cfg.url.origin + cfg.url.pathname, context);
    }
    return reporter;
}

// traceparent joins a receiving system to the message's trace (root span as
// parent). An existing traceparent (from the sending application) is kept;
// X-OTel-MTA-Trace always carries ours.
function addTraceHeaders(delivery) {
    const headers = delivery && delivery.headers;
    if (!headers || typeof headers.getFirst !== 'function') {
        return;
    }
    const mid = typeof delivery.messageId === 'string' && delivery.messageId ? delivery.messageId : headers.getFirst('message-id');
    const value = traceIds.traceparent(mid, typeof delivery.id === 'string' ? delivery.id : null);
    if (!value) {
        return;
    }
    headers.update('X-OTel-MTA-Trace', value);
    if (!headers.getFirst('traceparent')) {
        headers.add('traceparent', value);
    }
}

module.exports = {
    title: TITLE,
    init,
    // not part of ZoneMTA's plugin interface: for tests and embedding
    _reporters: lifecycle.reporters,
    drainAll: timeoutMs => lifecycle.drainAll(timeoutMs),
    closeAll: () => lifecycle.closeAll()
};
