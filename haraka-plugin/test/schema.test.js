'use strict';

// schema/events.v2.schema.json: the example batch (every Haraka event type)
// is valid, what the plugin must never send is not, and version 2 keeps every
// version-1 definition as it was (a v1 batch is a valid v2 batch).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const path = require('path');
const h = require('./helpers');

const SCHEMA_DIR = path.resolve(__dirname, '..', '..', 'schema');
const example = JSON.parse(fs.readFileSync(path.join(SCHEMA_DIR, 'examples', 'batch.v2.json'), 'utf8'));
const v1 = JSON.parse(fs.readFileSync(path.join(SCHEMA_DIR, 'events.v1.schema.json'), 'utf8'));
const v1example = JSON.parse(fs.readFileSync(path.join(SCHEMA_DIR, 'examples', 'batch.v1.json'), 'utf8'));
const clone = v => JSON.parse(JSON.stringify(v));

function withEvent(mutate) {
    const batch = clone(example);
    mutate(batch);
    return h.validateBatch(batch);
}

test('the example batch is valid and has every Haraka event type', () => {
    h.assertValid(example);
    const types = new Set(example.events.map(e => e.type));
    assert.deepEqual([...types].filter(t => t.startsWith('haraka.')).sort(), ['haraka.connection', 'haraka.delivery', 'haraka.log', 'haraka.transaction']);
});

test('version 2 is version 1 plus the haraka.* types', () => {
    const v2 = h.schema;
    for (const [name, def] of Object.entries(v1.$defs)) {
        if (name === 'event' || name === 'source' || name === 'pluginHealth') {
            continue; // the event union grows; two descriptions name Haraka
        }
        assert.deepEqual(v2.$defs[name], def, name);
    }
    const stripped = d => JSON.parse(JSON.stringify(d, (k, v) => (k === 'description' ? undefined : v)));
    assert.deepEqual(stripped(v2.$defs.source), stripped(v1.$defs.source));
    assert.deepEqual(stripped(v2.$defs.pluginHealth), stripped(v1.$defs.pluginHealth));
    const added = v2.$defs.event.properties.type.enum.filter(t => !v1.$defs.event.properties.type.enum.includes(t));
    assert.deepEqual(added, ['haraka.connection', 'haraka.transaction', 'haraka.delivery', 'haraka.log']);
    const asV2 = Object.assign(clone(v1example), { schema: 'otel-mta.events/v2' });
    h.assertValid(asV2);
});

test('rejects what the plugin must not send', () => {
    const tx = 1; // the accepted transaction
    const cases = {
        'a v1 batch': b => (b.schema = 'otel-mta.events/v1'),
        'unknown type': b => (b.events[0].type = 'haraka.body'),
        'connection outcome': b => (b.events[0].outcome = 'deferred'),
        'refusal without a reply': b => delete b.events[0].refusals[0].reply,
        'SMTP code out of range': b => (b.events[tx].code = 250.5),
        'code 600': b => (b.events[tx].recipients[0].code = 600),
        'recipient outcome': b => (b.events[tx].recipients[0].outcome = 'queued'),
        'recipient without an address': b => delete b.events[tx].recipients[0].address,
        'transaction without recipients': b => delete b.events[tx].recipients,
        'a subject': b => (b.events[tx].subject = 'Hello'),
        'a body': b => (b.events[tx].body = 'Hello'),
        'a reply over 1024': b => (b.events[tx].reply = 'x'.repeat(1025)),
        'null for an unknown value': b => (b.events[tx].message_id = null),
        'omitted counts incomplete': b => delete b.events[2].recipients_omitted.aborted,
        'delivery outcome': b => (b.events[3].outcome = 'rejected'),
        'delivery port': b => (b.events[3].port = 0),
        'log level': b => (b.events[6].level = 'info'),
        'empty log message': b => (b.events[6].message = ''),
        'uuid too long': b => (b.events[6].uuid = 'x'.repeat(65))
    };
    for (const [name, mutate] of Object.entries(cases)) {
        assert.equal(withEvent(mutate), false, name);
    }
});
