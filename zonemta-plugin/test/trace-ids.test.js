'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');
const ids = require('../lib/trace-ids');

const ROOT = path.resolve(__dirname, '..', '..');
const vectors = JSON.parse(fs.readFileSync(path.join(ROOT, 'spec', 'trace-id-vectors.json'), 'utf8'));

test('every trace id vector', () => {
    assert.ok(vectors.trace_ids.length >= 10);
    for (const v of vectors.trace_ids) {
        assert.equal(ids.traceKey(v.message_id, v.queue_id), v.key, JSON.stringify(v));
        assert.equal(ids.traceIdFor(v.message_id, v.queue_id), v.trace_id, JSON.stringify(v));
    }
});

test('every root span id vector', () => {
    assert.ok(vectors.root_span_ids.length > 0);
    for (const v of vectors.root_span_ids) {
        assert.equal(ids.rootSpanId(v.queue_id), v.span_id);
    }
});

test('every attempt span id vector', () => {
    assert.ok(vectors.attempt_span_ids.length > 0);
    for (const v of vectors.attempt_span_ids) {
        assert.equal(ids.attemptSpanId(v.queue_id, v.seq, v.action, v.defcount), v.span_id, JSON.stringify(v));
    }
});

test('every phase span id vector', () => {
    assert.ok(vectors.phase_span_ids.length > 0);
    for (const v of vectors.phase_span_ids) {
        assert.equal(ids.phaseSpanId(v.attempt_span_id, v.phase), v.span_id);
    }
});

test('traceparent is version 00, trace id, root span id, sampled', () => {
    const v = vectors.trace_ids[0];
    const tp = ids.traceparent(v.message_id, '18c5f3d2a3e0001234');
    assert.equal(tp, `00-${v.trace_id}-${vectors.root_span_ids[0].span_id}-01`);
    assert.equal(ids.traceparent(null, null), null);
    assert.equal(ids.traceparent('<a@b>', null), null, 'no root span without a queue id');
});

// Inputs where languages disagree easily (whitespace sets, non-ASCII case,
// surrogate pairs): compare with the Python implementation the sidecar uses.
test('agrees with the sidecar (otel_mta/ids.py) on awkward input', t => {
    const idsPy = path.join(ROOT, 'otel_mta', 'ids.py');
    const probe = spawnSync('python3', ['--version']);
    if (probe.error || !fs.existsSync(idsPy)) {
        t.skip('python3 or otel_mta/ids.py not available');
        return;
    }
    const inputs = [
        ['\u00a0<x@Y.Z>\u3000', null],
        ['\ufeff<x@Y.Z>', null],
        ['\x1c<x@Y.Z>\x1f', null],
        ['\x85<x@ÄB.C>\x85', null],
        ['<ǅ@İSTANBUL.Example>', null],
        ['<😀@Ex.COM>', null],
        ['<<a@B>>', null],
        ['< >', ' q1 '],
        ['   ', '\t\n'],
        ['<@>', null],
        ['<a@>', null],
        ['<a@b@C>', 'Q']
    ];
    const script = [
        'import json, sys',
        `sys.path.insert(0, ${JSON.stringify(ROOT)})`,
        'from otel_mta import ids',
        'out = []',
        'for mid, qid in json.load(sys.stdin):',
        '    t = ids.trace_id_for(mid, qid)',
        '    out.append([ids.trace_key(mid, qid), t.hex() if t else None])',
        'print(json.dumps(out))'
    ].join('\n');
    const res = spawnSync('python3', ['-c', script], { input: JSON.stringify(inputs), encoding: 'utf8' });
    assert.equal(res.status, 0, res.stderr);
    const expected = JSON.parse(res.stdout);
    inputs.forEach(([mid, qid], i) => {
        assert.deepEqual([ids.traceKey(mid, qid), ids.traceIdFor(mid, qid)], expected[i], JSON.stringify(inputs[i]));
    });
});
