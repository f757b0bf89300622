"""`otel-mta trace-id`: the trace id of one message, from its Message-ID, its
ZoneMTA queue id or its Haraka transaction uuid, and optionally a link into
Grafana, Tempo or Jaeger.

A Message-ID gives the trace id directly (ids.py, docs/trace-ids.md). A queue
id does not: the trace is keyed by the message's Message-ID, which only the
running sidecar knows (its queue-id -> Message-ID index, learned from QUEUED
entries and from the Haraka plugin's transactions), so a queue id or
transaction uuid is looked up at the sidecar's health endpoint
(GET /lookup?queue_id=..., otel_mta/health.py).
"""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from otel_mta import ids
from otel_mta.config import parse_endpoint

DEFAULT_ENDPOINT = "127.0.0.1:9478"
PLACEHOLDER = "{trace_id}"
# ZoneMTA's queue ids are 18 hex digits (e.g. 18c5f3d2a3e0001234); its logs
# add the recipient's delivery sequence (18c5f3d2a3e0001234.002).
QUEUE_ID = re.compile(r"([0-9a-fA-F]{12,32})(?:\.[0-9a-fA-F]{1,6})?")
# Haraka's: the connection's uuid (uppercase), its transactions <uuid>.N, and
# the entries of its outbound queue <uuid>.N.K (one per destination domain)
HARAKA_ID = re.compile(r"([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
                       r"(?:\.(\d{1,9})(?:\.\d{1,9})?)?")


class LookupFailed(Exception):
    """A lookup that cannot give an answer; the text says why and what to do."""


@dataclass(frozen=True)
class Answer:
    trace_id: str          # 32 lowercase hex digits
    how: str               # one line for stderr: where the id came from


def kind_of(value: str, forced: str | None = None) -> str:
    """"message-id" or "queue-id": what the user gave. A Message-ID has an @
    or angle brackets; a queue id is hex (with its .seq from a log line) or a
    Haraka uuid."""
    if forced:
        return forced
    text = value.strip(ids.WS)
    if "@" in text or text.startswith("<"):
        return "message-id"
    return "queue-id" if QUEUE_ID.fullmatch(text) or HARAKA_ID.fullmatch(text) else "message-id"


def from_message_id(message_id: str) -> Answer:
    trace = ids.trace_id_for(message_id, None)
    if trace is None:
        raise LookupFailed("that Message-ID is empty once its angle brackets and spaces are removed")
    return Answer(trace.hex(), f"trace id of Message-ID <{ids.normalize_message_id(message_id)}>")


def base_url(endpoint: str | None) -> str:
    """http://host:port of the sidecar's health server from `--endpoint`,
    OTEL_MTA_HEALTH_ENDPOINT or the default. The sidecar's own setting is the
    address it listens on (0.0.0.0:9478), so a wildcard host means this host."""
    text = (endpoint or "").strip() or DEFAULT_ENDPOINT
    try:
        parsed = parse_endpoint(text)
    except ValueError as err:
        raise LookupFailed(f"bad sidecar endpoint {text!r}: {err}") from None
    if parsed is None:
        raise LookupFailed("the sidecar's health endpoint is off (OTEL_MTA_HEALTH_ENDPOINT=off): "
                          "give its address with --endpoint HOST:PORT")
    host, port = parsed
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    scheme = urllib.parse.urlsplit(text).scheme if "://" in text else "http"
    return f"{scheme}://{host}:{port}"


def _message_of(value: str) -> tuple[str, str]:
    """(the id the sidecar knows the message by, what it is) of a queue id as
    the user gave it: a ZoneMTA queue id without its .seq; a Haraka
    transaction uuid, uppercase as Haraka makes it, without the .K its
    outbound queue adds per domain."""
    text = value.strip(ids.WS)
    m = HARAKA_ID.fullmatch(text)
    if m:
        if m.group(2) is None:
            raise LookupFailed(
                f"{text} is a Haraka connection uuid, and a connection can carry several messages: give the "
                f"transaction's uuid, {m.group(1).upper()}.N (N = 1 for the first message of the connection), "
                f"as Haraka's log lines about the message show it.")
        return f"{m.group(1).upper()}.{m.group(2)}", "Haraka transaction"
    m = QUEUE_ID.fullmatch(text)
    return (m.group(1) if m else text), "queue id"


def from_queue_id(queue_id: str, endpoint: str | None, timeout: float = 5.0) -> Answer:
    qid, what = _message_of(queue_id)
    haraka = what == "Haraka transaction"
    base = base_url(endpoint)
    url = f"{base}/lookup?{urllib.parse.urlencode({'queue_id': qid})}"
    # Without its Message-ID a message is traced by its queue id (docs/trace-ids.md)
    fallback = ids.trace_id_for(None, qid)
    attr = "haraka.transaction.id" if haraka else "mta.queue_id"
    hint = (f"If the message had no Message-ID, its trace id is {fallback.hex()} (traced by its {what}); "
            f"otherwise find its Message-ID in the logs ({attr}={qid}) and give that instead.")
    learns = ("the Haraka plugin's transaction events" if haraka else "ZoneMTA's QUEUED entries")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as err:
        if err.code == 404 and _json(err).get("known") is False:
            raise LookupFailed(f"the sidecar at {base} does not know {what} {qid}: it learns them from "
                              f"{learns} and keeps the newest (correlation.index_size), and it "
                              f"forgets them when it restarts.\n{hint}") from None
        if err.code == 404:
            raise LookupFailed(f"{base} has no /lookup route: is it an otel-mta sidecar of this version?") from None
        raise LookupFailed(f"the sidecar at {base} answered {err.code}: {_json(err).get('error', err.reason)}") \
            from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        why = getattr(err, "reason", err)
        why = why.strerror.lower() if isinstance(why, OSError) and why.strerror else why
        raise LookupFailed(f"cannot reach the sidecar at {base} ({why}): a {what} is resolved by the running "
                          f"sidecar; point --endpoint or OTEL_MTA_HEALTH_ENDPOINT at its health endpoint "
                          f"(HOST:PORT, default {DEFAULT_ENDPOINT}).\n{hint}") from None
    trace = body.get("trace_id") if isinstance(body, dict) else None
    if not isinstance(trace, str) or not re.fullmatch(r"[0-9a-f]{32}", trace):
        raise LookupFailed(f"the sidecar at {base} gave an answer without a trace id: {str(body)[:200]}")
    if body.get("traced_by") == "id":
        return Answer(trace, f"{what} {qid}: it has no Message-ID, so it is traced by its {what} "
                             f"(known to the sidecar at {base})")
    return Answer(trace, f"{what} {qid}: its Message-ID is known to the sidecar at {base}")


def link(template: str, trace_id: str) -> str:
    """The template with every {trace_id} replaced (only that: the JSON of a
    Grafana Explore URL is full of other braces)."""
    if PLACEHOLDER not in template:
        raise LookupFailed(f"the URL template has no {PLACEHOLDER} in it: {template}")
    return template.replace(PLACEHOLDER, trace_id)


def _json(err: urllib.error.HTTPError) -> dict:
    try:
        body = json.loads(err.read())
    except (ValueError, OSError):
        return {}
    return body if isinstance(body, dict) else {}
