"""The hand-written validator (otel_mta/sources/events_schema.py) accepts exactly
what the JSON Schemas (schema/events.v1.schema.json and events.v2.schema.json,
validated by jsonschema) accept: valid events of every type and thousands of
broken variants, for each version."""
from __future__ import annotations

import copy
import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from otel_mta.sources.events_schema import MAX_DEPTH, Invalid, check_batch, check_event
from tests.conftest import ROOT

SCHEMA = json.loads((ROOT / "schema" / "events.v1.schema.json").read_text())
EXAMPLE = json.loads((ROOT / "schema" / "examples" / "batch.v1.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
TEMPLATES = {e["type"]: e for e in EXAMPLE["events"]}


def schema_says(event) -> bool:
    return VALIDATOR.is_valid({"schema": EXAMPLE["schema"], "source": EXAMPLE["source"], "events": [event]})


def we_say(event) -> bool:
    try:
        check_event(event)
        return True
    except Invalid:
        return False


def test_the_fast_paths_take_the_frequent_types():
    """Only a speed matter: valid frequent events must not fall back to the general check."""
    from otel_mta.sources.events_schema import _FAST
    for kind, fast in _FAST.items():
        assert fast(TEMPLATES[kind]), kind
    queue = {k: v for k, v in TEMPLATES["message.queue"].items() if k in ("id", "type", "time_ms", "queue_id")}
    assert _FAST["message.queue"](queue)


def test_every_example_event_is_valid_for_both():
    assert len(TEMPLATES) == 8
    for event in EXAMPLE["events"]:
        assert schema_says(event) and we_say(event), event
    check_batch(EXAMPLE)


# -- broken variants --------------------------------------------------------------
def _strings():
    return st.one_of(st.text(max_size=3), st.text(min_size=30, max_size=70), st.text(min_size=120, max_size=260),
                     st.sampled_from(["", "ACCEPTED", "DEFERRED", "connect", "tls", "smtp", "delivered", "unknown",
                                      "log.entry", "plugin.health", "x" * 64, "x" * 65, "x" * 998, "x" * 999]))


JSON_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.integers(2**31, 2**53),
    st.sampled_from([0.0, 1.0, -1.0, 2.5, 1795714620000.0, 1e300]), _strings(),
    st.lists(st.integers(), max_size=4), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def _paths(event):
    """Where a mutation can land: top-level keys, entry keys, phase keys and attributes."""
    out = [()]
    for k, v in event.items():
        out.append((k,))
        if isinstance(v, dict):
            out += [(k, kk) for kk in v]
        if k == "phases" and isinstance(v, list):
            for i, ph in enumerate(v):
                out.append((k, i))
                if isinstance(ph, dict):
                    out += [(k, i, kk) for kk in ph]
                    if isinstance(ph.get("attributes"), dict):
                        out += [(k, i, "attributes", a) for a in ph["attributes"]]
    return out


def _container(event, path):
    node = event
    for p in path[:-1]:
        node = node[p]
    return node


@st.composite
def mutated_events(draw):
    event = copy.deepcopy(TEMPLATES[draw(st.sampled_from(sorted(TEMPLATES)))])
    for _ in range(draw(st.integers(0, 3))):
        paths = [p for p in _paths(event) if p]
        path = draw(st.sampled_from(paths))
        parent = _container(event, path)
        action = draw(st.sampled_from(["delete", "replace", "add", "retype"]))
        key = path[-1]
        if action == "delete":
            if isinstance(parent, dict):
                parent.pop(key, None)
            elif isinstance(parent, list) and len(parent) > 0:
                parent.pop(key)
        elif action == "replace":
            parent[key] = draw(JSON_VALUES)
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "seq", "zone", "error", "attributes", "message_id", "size",
                                         "attempt_start_ms", "category", "action"]))] = draw(JSON_VALUES)
        elif action == "retype":
            event["type"] = draw(st.sampled_from(sorted(TEMPLATES) + ["log.Entry", "", "queue"]))
    return event


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_events())
def test_same_verdict_as_jsonschema_on_broken_events(event):
    assert we_say(event) == schema_says(event), json.dumps(event)[:500]


@st.composite
def mutated_batches(draw):
    doc = copy.deepcopy(EXAMPLE)
    doc["events"] = []
    for _ in range(draw(st.integers(0, 2))):
        target = draw(st.sampled_from(["top", "source"]))
        node = doc if target == "top" else doc.get("source")
        if not isinstance(node, dict):
            break
        key = draw(st.sampled_from(sorted(node) + ["extra"]))
        if draw(st.booleans()):
            node.pop(key, None)
        else:
            node[key] = draw(JSON_VALUES)
    return doc


@settings(max_examples=500, deadline=None)
@given(mutated_batches())
def test_same_verdict_as_jsonschema_on_broken_envelopes(doc):
    try:
        check_batch(doc)
        ours = True
    except Invalid:
        ours = False
    # events are checked one by one (the other test); here only the envelope counts
    envelope = dict(doc, events=[]) if isinstance(doc.get("events"), list) else doc
    assert ours == VALIDATOR.is_valid(envelope), json.dumps(doc)[:500]


def test_more_events_than_the_schema_allows():
    doc = dict(EXAMPLE, events=[TEMPLATES["queue.release"]] * 10_001)
    assert not VALIDATOR.is_valid(doc)
    with pytest.raises(Invalid, match="too_many_events"):
        check_batch(doc)


def test_nesting_limit_beyond_the_schema():
    """The one rule the schema does not have: entries nested deeper than MAX_DEPTH."""
    deep = leaf = {}
    for _ in range(MAX_DEPTH + 2):
        leaf["x"] = {}
        leaf = leaf["x"]
    event = dict(TEMPLATES["log.entry"], entry={"id": "q1", "action": "X", "deep": deep})
    assert schema_says(event)
    with pytest.raises(Invalid, match="too_deep"):
        check_event(event)
    shallow = dict(event, entry={"id": "q1", "action": "X", "ok": [{"a": [1, 2]}]})
    assert we_say(shallow) and schema_says(shallow)


# -- every limit in the schema, at its edges --------------------------------------
def _resolve(node):
    while "$ref" in node:
        node = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _edges(prop):
    """Values at and just beyond the limits the schema sets for one property."""
    p = _resolve(prop)
    out = [None, True, [], {}, -1, 1.5]
    if "minLength" in p or "maxLength" in p or p.get("type") == "string":
        lo, hi = p.get("minLength", 0), p.get("maxLength", 300)
        out += ["x" * n for n in {max(lo - 1, 0), lo, hi, hi + 1}]
    if p.get("type") == "integer":
        out += [0, 1, 1.0, 2**40, "1"]
    if "enum" in p:
        out += list(p["enum"]) + [p["enum"][0].lower() + "x"]
    return out


def _cases():
    for kind, template in sorted(TEMPLATES.items()):
        spec = next(_resolve(s) for s in SCHEMA["$defs"]["event"]["oneOf"]
                    if _resolve(s)["properties"]["type"].get("const") == kind)
        for name, prop in spec["properties"].items():
            if name == "type":
                continue
            for value in _edges(prop):
                yield f"{kind}.{name}={str(value)[:12]}", dict(copy.deepcopy(template), **{name: value})
            if name not in spec["required"] and name in template:
                yield f"{kind}.-{name}", {k: v for k, v in template.items() if k != name}
        for name in spec["required"]:
            yield f"{kind}.-{name}", {k: v for k, v in template.items() if k != name}
    phases = TEMPLATES["delivery.phases"]
    phase = phases["phases"][0]
    for name, prop in _resolve(SCHEMA["$defs"]["phase"])["properties"].items():
        for value in _edges(prop):
            yield f"phase.{name}={str(value)[:12]}", dict(phases, phases=[dict(phase, **{name: value})])
    for n in (0, 1, 3, 4):
        yield f"phases x{n}", dict(phases, phases=[phase] * n)
    for n in (32, 33):
        yield f"attributes x{n}", dict(phases, phases=[dict(phase, attributes={f"a{i}": i for i in range(n)})])
    for value in (None, [1], {"a": 1}, True, 1.5, "s"):
        yield f"attribute value {value}", dict(phases, phases=[dict(phase, attributes={"a": value})])
    entry = TEMPLATES["log.entry"]
    for key in ("id", "seq", "action"):
        for value in (None, True, 1, 1.5, "", [], {}):
            yield f"entry.{key}={value}", dict(entry, entry=dict(entry["entry"], **{key: value}))
    yield "entry without id", dict(entry, entry={"action": "QUEUED"})
    yield "entry not an object", dict(entry, entry=["id"])


CASES = list(_cases())


@pytest.mark.parametrize("event", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_same_verdict_at_every_limit(event):
    assert we_say(event) == schema_says(event)


def test_the_limit_cases_cover_both_verdicts():
    verdicts = [schema_says(e) for _, e in CASES]
    assert len(CASES) > 300 and 0.1 < sum(verdicts) / len(verdicts) < 0.9


# -- version 2: the Haraka plugin's types, and v1's types in a v2 batch ------------------
SCHEMA2 = json.loads((ROOT / "schema" / "events.v2.schema.json").read_text())
EXAMPLE2 = json.loads((ROOT / "schema" / "examples" / "batch.v2.json").read_text())
VALIDATOR2 = jsonschema.Draft202012Validator(SCHEMA2)
TEMPLATES2 = {}
for _e in EXAMPLE2["events"]:
    TEMPLATES2.setdefault(_e["type"], _e)
HARAKA_TYPES = sorted(t for t in TEMPLATES2 if t.startswith("haraka."))


def schema2_says(event) -> bool:
    return VALIDATOR2.is_valid({"schema": EXAMPLE2["schema"], "source": EXAMPLE2["source"], "events": [event]})


def we_say2(event, version: int = 2) -> bool:
    try:
        check_event(event, version)
        return True
    except Invalid:
        return False


def test_every_v2_example_event_is_valid_for_both():
    assert HARAKA_TYPES == ["haraka.connection", "haraka.delivery", "haraka.log", "haraka.transaction"]
    for event in EXAMPLE2["events"]:
        assert schema2_says(event) and we_say2(event), event
    assert check_batch(EXAMPLE2) == 2
    assert check_batch(EXAMPLE) == 1


def test_v1_types_are_valid_in_v2_and_haraka_types_only_in_v2():
    for event in EXAMPLE["events"]:
        assert schema2_says(event) and we_say2(event), event["type"]
    for kind in HARAKA_TYPES:
        event = TEMPLATES2[kind]
        assert not schema_says(event) and not we_say2(event, version=1), kind


def _paths2(event):
    """Mutation points: top-level keys, and keys of objects inside lists (recipients, refusals)."""
    out = []
    for k, v in event.items():
        out.append((k,))
        if isinstance(v, dict):
            out += [(k, kk) for kk in v]
        if isinstance(v, list):
            for i, item in enumerate(v):
                out.append((k, i))
                if isinstance(item, dict):
                    out += [(k, i, kk) for kk in item]
    return out


@st.composite
def mutated_haraka_events(draw):
    event = copy.deepcopy(TEMPLATES2[draw(st.sampled_from(HARAKA_TYPES))])
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths2(event)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _container(event, path)
        action = draw(st.sampled_from(["delete", "replace", "add", "retype"]))
        key = path[-1]
        if action == "delete":
            if isinstance(parent, dict):
                parent.pop(key, None)
            elif isinstance(parent, list) and len(parent) > 0:
                parent.pop(key)
        elif action == "replace":
            parent[key] = draw(st.one_of(JSON_VALUES, st.sampled_from(
                [200, 199, 599, 600, 250.0, 65535, 65536, "accepted", "refused", "aborted", "bounced", "INFO", "x" * 1024,
                 "x" * 1025, "x" * 8192, "x" * 8193])))
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "code", "reply", "plugin", "stage", "message_id", "tls", "uuid",
                                         "recipients_omitted", "refusals", "subject"]))] = draw(JSON_VALUES)
        elif action == "retype":
            event["type"] = draw(st.sampled_from(HARAKA_TYPES + ["log.entry", "haraka.Log", "haraka"]))
    return event


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_haraka_events())
def test_same_verdict_as_jsonschema_on_broken_haraka_events(event):
    assert we_say2(event) == schema2_says(event), json.dumps(event)[:500]


def _resolve2(node):
    while "$ref" in node:
        node = SCHEMA2["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _edges2(prop):
    p = _resolve2(prop)
    out = [None, True, [], {}, -1, 1.5, "x"]
    if "minLength" in p or "maxLength" in p or p.get("type") == "string":
        lo, hi = p.get("minLength", 0), p.get("maxLength", 300)
        out += ["x" * n for n in {max(lo - 1, 0), lo, hi, hi + 1}]
    if p.get("type") == "integer":
        lo, hi = p.get("minimum", 0), p.get("maximum", 2**40)
        out += [0, 1, 1.0, lo - 1, lo, hi, hi + 1, float(hi), "1"]
    if p.get("type") == "boolean":
        out += [False, 0, 1, "true"]
    if "enum" in p:
        out += list(p["enum"]) + [p["enum"][0].lower() + "x"]
    if p.get("type") == "array":
        out += [[None], p.get("maxItems", 0)]
    return out


def _cases2():
    for kind in HARAKA_TYPES:
        template = TEMPLATES2[kind]
        spec = next(_resolve2(s) for s in SCHEMA2["$defs"]["event"]["oneOf"]
                    if _resolve2(s)["properties"]["type"].get("const") == kind)
        for name, prop in spec["properties"].items():
            if name == "type":
                continue
            for value in _edges2(prop):
                yield f"{kind}.{name}={str(value)[:12]}", dict(copy.deepcopy(template), **{name: value})
            if name in template and name not in spec["required"]:
                yield f"{kind}.-{name}", {k: v for k, v in template.items() if k != name}
        for name in spec["required"]:
            yield f"{kind}.-{name}", {k: v for k, v in template.items() if k != name}
        # the objects inside: recipients, refusals
        for list_key in ("recipients", "refusals"):
            if not template.get(list_key):
                continue
            item_spec = _resolve2(spec["properties"][list_key]["items"])
            item = template[list_key][0]
            for name, prop in item_spec["properties"].items():
                for value in _edges2(prop):
                    yield (f"{kind}.{list_key}[].{name}={str(value)[:12]}",
                           dict(copy.deepcopy(template), **{list_key: [dict(item, **{name: value})]}))
            for name in item_spec.get("required", ()):
                yield (f"{kind}.{list_key}[].-{name}",
                       dict(copy.deepcopy(template), **{list_key: [{k: v for k, v in item.items() if k != name}]}))
            yield f"{kind}.{list_key}[] extra", dict(copy.deepcopy(template), **{list_key: [dict(item, extra=1)]})
            limit = spec["properties"][list_key]["maxItems"]
            for n in (limit, limit + 1):
                yield f"{kind}.{list_key} x{n}", dict(copy.deepcopy(template), **{list_key: [item] * n})


CASES2 = list(_cases2())


@pytest.mark.parametrize("event", [c[1] for c in CASES2], ids=[c[0] for c in CASES2])
def test_same_verdict_at_every_limit_v2(event):
    assert we_say2(event) == schema2_says(event)


def test_the_v2_limit_cases_cover_both_verdicts():
    verdicts = [schema2_says(e) for _, e in CASES2]
    assert len(CASES2) > 400 and 0.1 < sum(verdicts) / len(verdicts) < 0.9


def test_unknown_schema_versions_are_refused():
    for schema in ("otel-mta.events/v3", "otel-mta.events/V2", None, 2):
        with pytest.raises(Invalid, match="unsupported_schema"):
            check_batch(dict(EXAMPLE2, schema=schema))
