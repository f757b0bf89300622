'use strict';

// Haraka plugin `otel-mta`: reports inbound SMTP connections and transactions
// (and Haraka's own relay deliveries, and optionally its log lines) to the
// otel-mta sidecar, which makes them OpenTelemetry traces, logs and metrics.
//
// Every hook does its bookkeeping and calls next() with no value: it returns
// at once and never changes Haraka's answer. A bug inside is caught and
// counted. Events go into a bounded buffer that a timer ships in batches
// (lib/reporter.js, shared with the ZoneMTA plugin).

const os = require('os');
const cluster = require('cluster');
const util = require('util');
const configLib = require('./lib/config');
const { Reporter } = require('./lib/reporter');
const { Lifecycle } = require('./lib/lifecycle');
const { Session } = require('./lib/session');
const { Outbound } = require('./lib/outbound');
const { LogLines } = require('./lib/log-lines');
const pkg = require('./package.json');

const SCHEMA = 'otel-mta.events/v2';
const lifecycle = new Lifecycle();

// Haraka copies these exports onto its Plugin object and calls register()
// with `this` = that object (config, register_hook, log methods).
exports.register = function () {
    try {
        setup(this);
    } catch (err) {
        this.logerror(`otel-mta disabled: ${err && err.stack ? err.stack : err}`);
    }
};

// Haraka calls this on a graceful shutdown or restart (plugins.shutdown).
exports.shutdown = function () {
    lifecycle.drainAll();
};

function setup(plugin) {
    const ini = plugin.config.get('otel-mta.ini', { booleans: configLib.INI_BOOLEANS });
    const cfg = configLib.load(ini, process.env, msg => plugin.logwarn(`config: ${msg}`));
    lifecycle.shutdownTimeoutMs = cfg.shutdownTimeoutMs;

    let inLogHook = false; // our own warnings must not be logged from inside the log hook
    const logger = {
        warn(prefix, fmt, ...args) {
            if (!inLogHook) {
                plugin.logwarn(util.format(fmt, ...args));
            }
        }
    };
    const reporter = new Reporter({
        cfg,
        logger,
        logPrefix: 'otel-mta',
        schema: SCHEMA,
        userAgent: `haraka-plugin-otel-mta/${pkg.version}`,
        source: {
            service: 'haraka',
            instance: os.hostname(),
            pid: process.pid,
            context: cluster.isWorker ? 'worker' : 'main',
            plugin_version: pkg.version
        }
    });
    const push = event => reporter.add(event);
    const counters = reporter.counters;

    // Each hook: bookkeeping in a try, then next() with nothing, always. All
    // run first (priority -100): a plugin that ends a hook early (DENY, or OK
    // at rcpt_ok, queue_ok, deny...) stops the hooks after it, and ours must
    // see every step wherever `otel-mta` is listed in config/plugins.
    const hook = (name, fn) => {
        const method = `otel_mta_${name}`;
        plugin[method] = function (next, object, params) {
            try {
                fn(object, params, Date.now());
            } catch (err) {
                counters.hook_errors++;
                reporter.warn(`hook:${name}`, '%s hook failed (Haraka goes on): %s', name, err && err.stack ? err.stack : err);
            }
            next();
        };
        plugin.register_hook(name, method, -100);
    };

    const session = new Session({ push, maxRecipients: cfg.maxRecipients, noteMessageId: cfg.outbound });
    hook('connect', (c, p, now) => session.connect(c, now));
    hook('mail', (c, p, now) => session.mail(c, p, now));
    hook('rcpt', (c, p, now) => session.rcpt(c, p, now));
    hook('rcpt_ok', (c, p) => session.rcptOk(c, p));
    hook('data', (c, p, now) => session.data(c, now));
    hook('data_post', (c, p, now) => session.dataPost(c, now));
    hook('queue', c => session.queue(c));
    hook('queue_outbound', c => session.queue(c));
    hook('max_data_exceeded', (c, p, now) => session.maxDataExceeded(c, now));
    hook('queue_ok', (c, p, now) => session.queueOk(c, p, now));
    hook('deny', (c, p, now) => session.deny(c, p, now));
    hook('reset_transaction', (c, p, now) => session.reset(c, now));
    hook('disconnect', (c, p, now) => session.disconnect(c, now));

    if (cfg.outbound) {
        const outbound = new Outbound({ push, maxRecipients: cfg.maxRecipients });
        // the inbound transaction entered Haraka's outbound queue (marks its haraka.transaction event)
        hook('pre_send_trans_email', c => session.outboundQueued(c));
        hook('send_email', (h, p, now) => outbound.start(h, now));
        hook('delivered', (h, p, now) => outbound.delivered(h, p, now));
        hook('deferred', (h, p, now) => outbound.deferred(h, p, now));
        hook('bounce', (h, p, now) => outbound.bounce(h, p, now));
    }

    if (cfg.logLines) {
        const lines = new LogLines({ push, level: cfg.logLevel });
        plugin.otel_mta_log = function (next, logger_, item) {
            inLogHook = true;
            try {
                lines.line(item, Date.now());
            } catch (err) {
                counters.hook_errors++;
            }
            inLogHook = false;
            next();
        };
        plugin.register_hook('log', 'otel_mta_log', -100);
    }

    lifecycle.add(reporter);
    reporter.start();
    if (cfg.handleSignals) {
        lifecycle.install();
    }
    plugin.loginfo(
        `reporting to ${cfg.url.origin + cfg.url.pathname}${cfg.apiKey ? ' with an API key' : ''}` +
            `${cfg.outbound ? ', relay deliveries' : ''}${cfg.logLines ? `, log lines from ${cfg.logLevel.toLowerCase()}` : ''}`
    );
}

// not part of Haraka's plugin interface: for tests and the bench
exports._lifecycle = lifecycle;
