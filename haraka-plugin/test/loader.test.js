'use strict';

// The plugin through Haraka's real plugin loader (plugins.js) in this
// process: found by name in the Haraka folder's node_modules, settings from
// config/otel-mta.ini (the package's defaults, the folder's overrides) and
// the environment, the hooks it registers, and hooks that never throw and
// always hand back to Haraka with nothing, whatever they are given.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const path = require('path');
const h = require('./helpers');
const configLib = require('../lib/config');

const dir = h.harakaDir({
    ports: [2525],
    plugins: ['otel-mta'],
    files: { 'otel-mta.ini': 'url=http://127.0.0.1:9/base\napi_key=from-file\n[events]\nlog_lines=true\nmax_recipients=3\n[buffer]\nmax_batch=7\n' }
});
process.env.HARAKA = dir;
process.env.OTEL_MTA_EVENTS_API_KEY = 'from-env';
delete process.env.OTEL_MTA_EVENTS_URL;
const plugins = require(path.join(h.HARAKA_PATH, 'plugins'));
const constants = require('haraka-constants'); // Haraka's own (hoisted into node_modules)
plugins.load_plugins();
const plugin = plugins.registered_plugins['otel-mta'];
const lifecycle = plugin._lifecycle;
const reporter = [...lifecycle.reporters][0];

test.after(() => {
    lifecycle.closeAll();
    fs.rmSync(dir, { recursive: true, force: true });
});

test('Haraka finds it as otel-mta in the Haraka folder node_modules and reads config/otel-mta.ini', () => {
    assert.ok(plugin, Object.keys(plugins.registered_plugins).join(','));
    assert.equal(plugin.hasPackageJson, true);
    assert.equal(fs.realpathSync(path.dirname(plugin.plugin_path)), h.PLUGIN_PATH);
    assert.ok(reporter, 'one reporter');
    assert.equal(reporter.cfg.url.href, 'http://127.0.0.1:9/base/v1/events');
    assert.equal(reporter.cfg.apiKey, 'from-env', 'the environment wins over the file');
    assert.equal(reporter.cfg.maxBatch, 7, 'the folder overrides the default');
    assert.equal(reporter.cfg.flushIntervalMs, 1000, 'the package default');
    assert.equal(reporter.cfg.maxRecipients, 3);
    assert.equal(reporter.batchHead.startsWith('{"schema":"otel-mta.events/v2","source":{"service":"haraka"'), true);
});

test('registers its hooks, the outbound ones (on by default) and log (log_lines)', () => {
    const ours = Object.entries(plugins.registered_hooks)
        .filter(([, items]) => items.some(i => i.plugin === 'otel-mta'))
        .map(([name]) => name)
        .sort();
    assert.deepEqual(ours, [
        'bounce',
        'connect',
        'data',
        'data_post',
        'deferred',
        'delivered',
        'deny',
        'disconnect',
        'log',
        'mail',
        'max_data_exceeded',
        'pre_send_trans_email',
        'queue',
        'queue_ok',
        'queue_outbound',
        'rcpt',
        'rcpt_ok',
        'reset_transaction',
        'send_email'
    ]);
    for (const name of ours) {
        const item = plugins.registered_hooks[name].find(i => i.plugin === 'otel-mta');
        assert.equal(item.priority, -100, `${name}: first, so that a plugin ending the hook early cannot hide a step`);
    }
});

test('settings: defaults, bounds, bad values replaced with a warning, the environment first', () => {
    const warnings = [];
    const cfg = configLib.load(
        { main: { url: 'ftp://x' }, buffer: { size: 'lots', max_batch: '20' }, events: { log_level: 'chatty', outbound: 'maybe' } },
        { OTEL_MTA_EVENTS_URL: ' http://sidecar:9477 ' },
        w => warnings.push(w)
    );
    assert.equal(cfg.url.href, 'http://sidecar:9477/v1/events');
    assert.equal(cfg.bufferSize, 10000);
    assert.equal(cfg.maxBatch, 20);
    assert.equal(cfg.logLevel, 'INFO');
    assert.equal(cfg.outbound, true);
    assert.equal(cfg.logLines, false);
    assert.equal(warnings.length, 3, warnings.join('\n'));
    assert.equal(configLib.load({ main: { url: 'ftp://x' } }, {}, () => {}).url.href, 'http://127.0.0.1:9477/v1/events');
    assert.equal(configLib.load({ main: { api_key: 'k' } }, {}).apiKey, 'k');
});

test("haraka-constants: the numbers lib/replies.js uses are Haraka's", () => {
    const r = require('../lib/replies');
    assert.equal(r.DENY, constants.deny);
    assert.equal(r.DENYSOFT, constants.denysoft);
    assert.equal(r.DENYDISCONNECT, constants.denydisconnect);
    assert.equal(r.DENYSOFTDISCONNECT, constants.denysoftdisconnect);
});

test('hooks never throw and always call next() once with nothing, whatever they get', () => {
    const odd = [undefined, null, {}, { transaction: {} }, { transaction: { uuid: 1 }, remote: null }, 'text', 42, { todo: {} }, { todo: { uuid: 'x' } }];
    const params = [undefined, null, [], [null], [{}], {}, 'x', [902, 'msg', 'p', 'f', null, 'rcpt'], { delay: 'x' }, new Error('e')];
    const before = reporter.counters.hook_errors;
    let calls = 0;
    for (const [name, items] of Object.entries(plugins.registered_hooks)) {
        for (const item of items.filter(i => i.plugin === 'otel-mta')) {
            for (const obj of odd) {
                for (const p of params) {
                    let got = 'not called';
                    plugin[item.method].call(plugin, (...args) => (got = args), obj, p);
                    assert.deepEqual(got, [], `${name} with ${JSON.stringify(obj)} / ${String(p)}`);
                    calls++;
                }
            }
        }
    }
    assert.ok(calls > 1000);
    // a broken object may make a hook fail inside: it is counted, Haraka goes on
    assert.ok(reporter.counters.hook_errors >= before);
});

test('a failing hook is counted and logged once a minute, not thrown', () => {
    const before = reporter.counters.hook_errors;
    const bomb = {
        constructor: { name: 'Connection' },
        get transaction() {
            throw new Error('boom');
        }
    };
    let got = 'not called';
    plugin.otel_mta_rcpt.call(plugin, (...args) => (got = args), bomb, []);
    assert.deepEqual(got, []);
    assert.equal(reporter.counters.hook_errors, before + 1);
});
