'use strict';

// The shared schema (schema/events.v1.schema.json) accepts what the plugin
// sends and rejects what it must never send.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const path = require('path');
const h = require('./helpers');

const example = JSON.parse(fs.readFileSync(path.resolve(__dirname, '..', '..', 'schema', 'examples', 'batch.v1.json'), 'utf8'));
const clone = v => JSON.parse(JSON.stringify(v));

function withEvent(mutate) {
    const batch = clone(example);
    mutate(batch);
    return h.validateBatch(batch);
}

test('the example batch (every event type) is valid', () => {
    h.assertValid(example);
    const types = new Set(example.events.map(e => e.type));
    assert.deepEqual([...types].sort(), h.schema.$defs.event.properties.type.enum.slice().sort());
});

test('rejects what the plugin must not send', () => {
    const cases = {
        'unknown schema version': b => (b.schema = 'otel-mta.events/v2'),
        'missing source': b => delete b.source,
        'unknown event type': b => (b.events[0].type = 'message.body'),
        'a body field on an event': b => (b.events[1].body = 'Hello world'),
        'log.entry without entry id': b => delete b.events[0].entry.id,
        'event without id': b => delete b.events[1].id,
        'fractional time': b => (b.events[1].time_ms = 1.5),
        'unknown phase': b => (b.events[4].phases[0].name = 'dns'),
        'no phases': b => (b.events[4].phases = []),
        'bad outcome': b => (b.events[4].action = 'QUEUED'),
        'nested phase attribute': b => (b.events[4].phases[0].attributes.x = { y: 1 }),
        'negative counter': b => (b.events[9].dropped = -1),
        'missing health counter': b => delete b.events[9].evicted,
        'unknown release status': b => (b.events[6].status = 'maybe')
    };
    for (const [name, mutate] of Object.entries(cases)) {
        assert.equal(withEvent(mutate), false, name);
    }
});

test('log.entry carries any ZoneMTA fields', () => {
    assert.equal(
        withEvent(b => {
            b.events[0].entry.custom = { nested: [1, 2] };
            b.events[0].entry.id = 12345;
        }),
        true
    );
});
