"""Validation of plugin event batches against schema/events.v1.schema.json
and schema/events.v2.schema.json (v1's types and the Haraka plugin's haraka.*
types), written by hand.

Why not a JSON Schema library: per event, on this machine (Python 3.11),
jsonschema's Draft202012Validator takes ~220 µs for a log.entry and ~800 µs
for a delivery.phases event, fastjsonschema's compiled validator ~44 / ~68 µs
(its oneOf tries the branches by raising exceptions); the checks below take
~1 µs (~3 µs for delivery.phases), with fast paths for the frequent types. The
endpoint's whole budget is 20 µs per event (50,000 events per CPU-second,
parsed, mapped and exported), so a library would be the cost.
tests/events/test_schema_equivalence.py feeds both this module and jsonschema
the same valid and broken events and requires the same verdict.

One addition to the schema: a log entry nested deeper than MAX_DEPTH is
refused ("too_deep"); nothing ZoneMTA logs nests more than one level.
"""
from __future__ import annotations

SCHEMA = "otel-mta.events/v1"
SCHEMAS = {"otel-mta.events/v1": 1, "otel-mta.events/v2": 2}
MAX_DEPTH = 16
_CONTAINERS = frozenset((dict, list))
_PHASE_NAMES = frozenset(("connect", "tls", "smtp"))
_OUTCOMES = frozenset(("ACCEPTED", "DEFERRED", "REJECTED"))
_STATUSES = frozenset(("delivered", "rejected", "unknown"))


# -- value checks: each returns True when the value is valid ------------------
def _int(v) -> bool:
    """JSON Schema 'integer' with minimum 0 (1.0 is an integer there; true is not)."""
    t = type(v)
    if t is int:
        return v >= 0
    return t is float and v >= 0 and v.is_integer()


def _str(lo: int, hi: int):
    def check(v) -> bool:
        return type(v) is str and lo <= len(v) <= hi
    return check


def _enum(allowed: frozenset):
    return lambda v: type(v) is str and v in allowed


def _str_or_number(v) -> bool:
    t = type(v)
    return t is str or t is int or t is float


def _scalar(v) -> bool:
    t = type(v)
    return t is str or t is int or t is float or t is bool


def _depth_ok(value, depth: int) -> bool:
    if depth > MAX_DEPTH:
        return False
    if type(value) is dict:
        value = value.values()
    for v in value:
        if type(v) in _CONTAINERS and not _depth_ok(v, depth + 1):
            return False
    return True


class Invalid(Exception):
    """An event (or batch) that does not match the schema; `reason` is short."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _entry(v) -> bool:
    if type(v) is not dict or "id" not in v or not _str_or_number(v["id"]):
        return False
    if "seq" in v and not _str_or_number(v["seq"]):
        return False
    if "action" in v and type(v["action"]) is not str:
        return False
    if not _CONTAINERS.isdisjoint(map(type, v.values())):   # flat entries: 0.5 µs for this line
        for x in v.values():
            if type(x) in _CONTAINERS and not _depth_ok(x, 2):
                raise Invalid("too_deep")
    return True


_PHASE_FIELDS = {
    "name": _enum(_PHASE_NAMES),
    "start_ms": _int,
    "end_ms": _int,
    "error": _str(1, 64),
    "attributes": lambda v: type(v) is dict and len(v) <= 32 and all(_scalar(x) for x in v.values()),
}
_PHASE_REQUIRED = ("name", "start_ms", "end_ms")


def _phase(v) -> bool:
    if type(v) is not dict:
        return False
    for k in _PHASE_REQUIRED:
        if k not in v:
            return False
    for k, x in v.items():
        check = _PHASE_FIELDS.get(k)
        if check is None or not check(x):
            return False
    return True


def _phases(v) -> bool:
    return type(v) is list and 1 <= len(v) <= 3 and all(_phase(p) for p in v)


_ID = _str(1, 64)
_QUEUE_ID = _str(1, 128)
_SEQ = _str(1, 32)
_ZONE = _str(0, 128)
_CATEGORY = _str(0, 64)
_MESSAGE_ID = _str(1, 998)
_COMMON = {"id": _ID, "type": lambda v: True, "time_ms": _int}

# type -> (required fields beyond id/type/time_ms, {field: check})
TYPES: dict[str, tuple[tuple[str, ...], dict]] = {
    "log.entry": (("entry",), {"entry": _entry}),
    "message.headers": (("queue_id", "message_id"), {"queue_id": _QUEUE_ID, "message_id": _MESSAGE_ID}),
    "message.queue": (("queue_id",), {"queue_id": _QUEUE_ID, "message_id": _MESSAGE_ID, "size": _int,
                                      "recipients": _int, "interface": _str(0, 64)}),
    "delivery.phases": (("queue_id", "seq", "action", "defcount", "phases"),
                        {"queue_id": _QUEUE_ID, "seq": _SEQ, "action": _enum(_OUTCOMES),
                         "defcount": _int, "attempt_start_ms": _int, "phases": _phases}),
    "queue.release": (("queue_id", "status"), {"queue_id": _QUEUE_ID, "seq": _SEQ, "zone": _ZONE,
                                               "status": _enum(_STATUSES)}),
    "queue.bounce": (("queue_id",), {"queue_id": _QUEUE_ID, "seq": _SEQ, "zone": _ZONE, "category": _CATEGORY}),
    "queue.delayed": (("queue_id",), {"queue_id": _QUEUE_ID, "seq": _SEQ, "zone": _ZONE, "category": _CATEGORY,
                                      "first_ms": _int, "prev_ms": _int, "last_ms": _int}),
    "plugin.health": (("buffered", "dropped", "sent", "failed", "retries", "evicted", "hook_errors"),
                      {k: _int for k in ("buffered", "dropped", "sent", "failed", "retries", "evicted",
                                         "hook_errors")}),
}


# -- version 2: the Haraka plugin's types --------------------------------------
def _bool(v) -> bool:
    return type(v) is bool


def _int_in(lo: int, hi: int):
    def check(v) -> bool:
        t = type(v)
        return (t is int or (t is float and v.is_integer())) and lo <= v <= hi
    return check


def _object(required: tuple, fields: dict):
    """A closed object: the required keys, and every key known and valid."""
    def check(v) -> bool:
        if type(v) is not dict:
            return False
        for k in required:
            if k not in v:
                return False
        for k, x in v.items():
            c = fields.get(k)
            if c is None or not c(x):
                return False
        return True
    return check


def _array(item, max_items: int):
    return lambda v: type(v) is list and len(v) <= max_items and all(item(x) for x in v)


_UUID = _str(1, 64)
_CODE = _int_in(200, 599)
_REPLY = _str(0, 1024)
_STAGE = _str(1, 64)
_PLUGIN = _str(1, 128)
_ADDRESS = _str(0, 998)
_PORT = _int_in(1, 65535)
_CLIENT = {"remote_ip": _str(1, 64), "remote_host": _str(1, 255), "helo": _str(1, 255), "local_port": _PORT,
           "tls": _bool, "esmtp": _bool, "relaying": _bool, "auth_user": _str(1, 255)}
_OUTCOMES_IN = frozenset(("accepted", "refused", "deferred", "aborted"))
_REFUSAL = _object(("stage", "code", "reply", "time_ms"),
                   {"stage": _STAGE, "code": _CODE, "reply": _REPLY, "plugin": _PLUGIN, "time_ms": _int})
_RECIPIENT = _object(("address", "outcome", "time_ms"),
                     {"address": _ADDRESS, "outcome": _enum(_OUTCOMES_IN), "time_ms": _int, "code": _CODE,
                      "reply": _REPLY, "stage": _STAGE, "plugin": _PLUGIN})
_OMITTED = _object(("accepted", "refused", "deferred", "aborted"),
                   {k: _int for k in ("accepted", "refused", "deferred", "aborted")})
_DELIVERY_RECIPIENT = _object(("address",), {"address": _ADDRESS, "code": _CODE, "status": _str(1, 32),
                                             "reply": _REPLY})
_LEVELS = frozenset(("DATA", "PROTOCOL", "DEBUG", "INFO", "NOTICE", "WARN", "ERROR", "CRIT", "ALERT", "EMERG"))

TYPES_V2: dict[str, tuple[tuple[str, ...], dict]] = {
    "haraka.connection": (("connection_id", "start_ms", "outcome"),
                          {"connection_id": _UUID, "start_ms": _int,
                           "outcome": _enum(frozenset(("accepted", "refused"))), "transactions": _int,
                           "refusals": _array(_REFUSAL, 20), **_CLIENT}),
    "haraka.transaction": (("transaction_id", "connection_id", "start_ms", "outcome", "mail_from", "recipients"),
                           {"transaction_id": _UUID, "connection_id": _UUID, "start_ms": _int,
                            "outcome": _enum(_OUTCOMES_IN), "code": _CODE, "reply": _REPLY, "stage": _STAGE,
                            "plugin": _PLUGIN, "mail_from": _ADDRESS, "recipients": _array(_RECIPIENT, 1000),
                            "recipients_omitted": _OMITTED, "message_id": _MESSAGE_ID, "size": _int,
                            "data_start_ms": _int, "data_end_ms": _int, "outbound_queue": _bool, **_CLIENT}),
    "haraka.delivery": (("transaction_id", "outcome", "domain", "recipients"),
                        {"transaction_id": _UUID, "outcome": _enum(frozenset(("delivered", "deferred", "bounced"))),
                         "domain": _str(0, 255), "recipients": _array(_DELIVERY_RECIPIENT, 1000),
                         "recipients_omitted": _int, "message_id": _MESSAGE_ID, "start_ms": _int,
                         "queued_ms": _int, "attempt": _int, "mx": _str(1, 255), "ip": _str(1, 64), "port": _PORT,
                         "mode": _str(1, 16), "tls": _bool, "auth": _bool, "reply": _REPLY, "retry_in_s": _int}),
    "haraka.log": (("level", "message"), {"level": _enum(_LEVELS), "message": _str(1, 8192), "uuid": _UUID,
                                          "origin": _str(1, 128)}),
}
TYPES.update(TYPES_V2)
V1_TYPES = frozenset(TYPES) - frozenset(TYPES_V2)
_FIELDS = {t: ({**_COMMON, **fields}, required) for t, (required, fields) in TYPES.items()}


# Fast paths for the frequent types: True means valid; False sends the event
# through the general check below, which finds the reason.
def _fast_log_entry(ev) -> bool:
    i, t = ev.get("id"), ev.get("time_ms")
    return (len(ev) == 4 and type(i) is str and 0 < len(i) <= 64 and type(t) is int and t >= 0
            and _entry(ev.get("entry")))


def _fast_phases(ev) -> bool:
    i, t, q, s, d = ev.get("id"), ev.get("time_ms"), ev.get("queue_id"), ev.get("seq"), ev.get("defcount")
    n = 9 if "attempt_start_ms" in ev else 8
    if not (len(ev) == n and type(i) is str and 0 < len(i) <= 64 and type(t) is int and t >= 0
            and type(q) is str and 0 < len(q) <= 128 and type(s) is str and 0 < len(s) <= 32
            and type(d) is int and d >= 0 and _is_in(ev.get("action"), _OUTCOMES)):
        return False
    if n == 9:
        a = ev["attempt_start_ms"]
        if type(a) is not int or a < 0:
            return False
    phases = ev.get("phases")
    return type(phases) is list and 1 <= len(phases) <= 3 and all(_fast_phase(p) for p in phases)


_SCALARS = {str, int, float, bool}


def _fast_phase(p) -> bool:
    if type(p) is not dict:
        return False
    name, start, end = p.get("name"), p.get("start_ms"), p.get("end_ms")
    if not (_is_in(name, _PHASE_NAMES) and type(start) is int and start >= 0 and type(end) is int and end >= 0):
        return False
    n = 3
    if "error" in p:
        err = p["error"]
        if type(err) is not str or not 0 < len(err) <= 64:
            return False
        n += 1
    if "attributes" in p:
        a = p["attributes"]
        if type(a) is not dict or len(a) > 32 or not _SCALARS.issuperset(map(type, a.values())):
            return False
        n += 1
    return len(p) == n


def _is_in(value, allowed: frozenset) -> bool:
    return type(value) is str and value in allowed


def _fast_release(ev) -> bool:
    i, t, q = ev.get("id"), ev.get("time_ms"), ev.get("queue_id")
    if not (type(i) is str and 0 < len(i) <= 64 and type(t) is int and t >= 0 and type(q) is str
            and 0 < len(q) <= 128 and _is_in(ev.get("status"), _STATUSES)):
        return False
    n = 5
    for k, lo, hi in (("seq", 1, 32), ("zone", 0, 128)):
        if k in ev:
            v = ev[k]
            if type(v) is not str or not lo <= len(v) <= hi:
                return False
            n += 1
    return len(ev) == n


def _fast_headers(ev) -> bool:
    i, t, q, m = ev.get("id"), ev.get("time_ms"), ev.get("queue_id"), ev.get("message_id")
    return (len(ev) == 5 and type(i) is str and 0 < len(i) <= 64 and type(t) is int and t >= 0
            and type(q) is str and 0 < len(q) <= 128 and type(m) is str and 0 < len(m) <= 998)


def _fast_queue(ev) -> bool:
    i, t, q = ev.get("id"), ev.get("time_ms"), ev.get("queue_id")
    if not (type(i) is str and 0 < len(i) <= 64 and type(t) is int and t >= 0 and type(q) is str
            and 0 < len(q) <= 128):
        return False
    n = 4
    m = ev.get("message_id")
    if m is not None:
        if type(m) is not str or not 0 < len(m) <= 998:
            return False
        n += 1
    for k in ("size", "recipients"):
        v = ev.get(k)
        if v is not None:
            if type(v) is not int or v < 0:
                return False
            n += 1
    f = ev.get("interface")
    if f is not None:
        if type(f) is not str or len(f) > 64:
            return False
        n += 1
    return len(ev) == n


_FAST = {"log.entry": _fast_log_entry, "delivery.phases": _fast_phases, "queue.release": _fast_release,
         "message.headers": _fast_headers, "message.queue": _fast_queue}


def check_event(ev, version: int = 2) -> str:
    """The event's type when `ev` is a valid event of that batch version; raises Invalid otherwise."""
    if type(ev) is not dict:
        raise Invalid("not_an_object")
    kind = ev.get("type")
    if version == 1 and kind not in V1_TYPES:
        raise Invalid("unknown_type")
    fast = _FAST.get(kind) if type(kind) is str else None
    if fast is not None and fast(ev):
        return kind
    spec = _FIELDS.get(kind) if type(kind) is str else None
    if spec is None:
        raise Invalid("unknown_type")
    fields, required = spec
    if "id" not in ev or "time_ms" not in ev:
        raise Invalid("missing_field")
    for k in required:
        if k not in ev:
            raise Invalid("missing_field")
    for k, v in ev.items():
        check = fields.get(k)
        if check is None:
            raise Invalid("unknown_field")
        if not check(v):
            raise Invalid("bad_" + k)
    return kind


_SOURCE = {"service": _str(1, 64), "instance": _str(1, 255), "pid": _int, "context": _str(1, 32),
           "plugin_version": _str(1, 64)}


def check_batch(doc, max_events: int = 10_000) -> int:
    """The envelope only (schema, source, events array); events are checked one
    by one. Returns the batch's version (1 or 2)."""
    if type(doc) is not dict:
        raise Invalid("not_a_batch")
    schema = doc.get("schema")
    version = SCHEMAS.get(schema) if type(schema) is str else None
    if version is None:
        raise Invalid("unsupported_schema")
    if len(doc) != 3 or "source" not in doc or "events" not in doc:
        raise Invalid("not_a_batch")
    source = doc["source"]
    if type(source) is not dict or len(source) != len(_SOURCE) or not all(
            k in source and check(source[k]) for k, check in _SOURCE.items()):
        raise Invalid("bad_source")
    events = doc["events"]
    if type(events) is not list:
        raise Invalid("not_a_batch")
    if len(events) > max_events:
        raise Invalid("too_many_events")
    return version
