"""What one delivery entry (ACCEPTED, DEFERRED, REJECTED) or queue entry
(QUEUED, NOQUEUE) says: its attributes and its log line. This is the stateless
part of the mapping in mail.py. State (the trace, metrics, the root span, span
timing) stays in mail.py.

They run for every entry, and in Python they were the largest single costs of
an entry (bench/remote_log_stages.py). So they have a C twin
(signals/_fields.c). These Python functions stay the reference.
tests/test_fields.py feeds both the same random entries under every privacy
mode and checks they give the same attributes, in the same order, and the same
results.
"""
from __future__ import annotations

import re

from otel_mta import privacy

# "550 5.1.1 ...", "250-2.0.0 ..."; the enhanced status is optional
_SMTP_REPLY = re.compile(r"^\s*(\d{3})(?:[ -]+(\d\.\d{1,3}\.\d{1,3})\b)?")


def num(value):
    """A number ZoneMTA sent (int or float, not bool), else None."""
    return value if type(value) in (int, float) else None


def smtp_reply(response: str):
    """(code, enhanced status or None) of an SMTP reply, or None."""
    m = _SMTP_REPLY.match(response)
    return (int(m.group(1)), m.group(2)) if m else None


def delivery_fields_py(entry: dict, attrs: dict, action: str, outcome: str, ref: str, red):
    """Add a delivery entry's attributes to `attrs` (shared by its log record
    and its attempt span) and return
    (body, span_extra, log_only, zone, ip, category, recipient_domain, response, timer, first_byte, defcount).

    `ref` is how ZoneMTA's own log lines name the delivery (<queue id>.<seq>);
    `red` the Redactor. `timer` and `first_byte` are ZoneMTA's `timer` and
    `start` (numbers of ms, or None).
    """
    get = entry.get
    zone = get("zone")
    mx = get("mx") or None
    ip = get("ip") or None
    peer = get("host") or None
    category = get("category") or None
    response = red.text(get("response")) or None
    protocol = get("protocol")
    attrs["mta.zone"] = zone
    attrs["mta.delivery.outcome"] = outcome
    red.address("mta.recipient", get("to"), red.recipient, attrs)
    red.address("mta.sender", get("from"), red.sender, attrs)
    red.address("mta.return_path", get("returnPath"), red.sender, attrs)
    attrs["mta.mx.host"] = mx
    attrs["server.address"] = mx
    attrs["network.peer.address"] = peer
    attrs["mta.sending_ip"] = ip
    attrs["mta.bounce.category"] = category
    attrs["mta.smtp.response"] = response
    if type(response) is str:
        reply = smtp_reply(response)
        if reply is not None:
            attrs["mta.smtp.code"], attrs["mta.smtp.enhanced_status"] = reply
    size = num(get("size"))
    attrs["mta.message.size"] = int(size) if size is not None else None
    attrs["mta.protocol"] = protocol
    tls = get("tlsVersion")
    if tls:
        attrs["mta.tls.version"] = tls
        attrs["mta.tls.cipher"] = get("tlsCipher") or None
        attrs["mta.tls.authorized"] = get("tlsAuthorized") is True
        attrs["mta.tls.authorization_error"] = get("tlsAuthorizationError") or None
    deferred = action == "DEFERRED"
    defcount = 0
    if deferred:
        value = num(get("defcount"))
        defcount = int(value) if value is not None else 0
        attrs["mta.defer.count"] = defcount
    # `timer`: the attempt's length in ms; `start`: ms from fetching the message
    # to its first byte out (ZoneMTA's lib/byte-counter.js); see mail.py
    timer = num(get("timer"))
    first_byte = num(get("start"))
    # no server.port: the remote log does not say which port ZoneMTA connected to
    # (25, 587, 465 or a relay's own); the plugin's connect phase does (mail.py)
    extra = {"network.local.address": ip, "network.protocol.name": protocol,
             "error.type": (category or "rejected") if action == "REJECTED" else None}
    log_only = {"mta.delivery.duration_ms": int(timer) if timer is not None else None}
    # the log body: a line an operator can read
    dom = attrs.get("mta.recipient.domain")
    head = f"{action}[{category}]" if category else action
    body = f"{head} {ref} to {dom or '?'}"
    if mx:
        body += f" via {mx}[{peer}]" if peer else f" via {mx}"
    if ip:
        body += f" from {ip}"
    if timer is not None:
        body += f" in {int(timer)} ms"
    if deferred:
        body += f" (deferral {defcount})"
    if response:
        body += f": {response}"
    return body, extra, log_only, zone, ip, category, dom, response, timer, first_byte, defcount


def recipient_count(to) -> int:
    """How many recipients ZoneMTA's comma-joined `to` names (1 for "<>" or
    none given): what the root span waits for when recipients are not recorded."""
    return len([a for a in to.split(",") if a.strip()]) if type(to) is str and to != "<>" else 1


def queued_fields_py(entry: dict, attrs: dict, action: str, queue_id: str, red):
    """Add a QUEUED or NOQUEUE entry's attributes to `attrs` and return
    (body, interface, size, recipients): the log line, the interface and size
    for the metrics, and how many recipients the message's root span waits for
    (0 for NOQUEUE)."""
    get = entry.get
    iface = get("interface")
    attrs["mta.interface"] = iface
    red.address("mta.sender", get("from"), red.sender, attrs)
    red.address("mta.header_from", get("headerFrom"), red.sender, attrs)
    red.address_list("mta.recipient", get("to"), red.recipient, attrs)
    red.value("mta.subject", get("subject"), red.subject, attrs)
    red.value("mta.user", get("user") or get("auth"), red.user, attrs)
    red.value("mta.client.address", get("src"), red.client, attrs)
    red.value("mta.client.host", get("originhost"), red.client, attrs)
    red.value("mta.client.helo", get("transhost"), red.client, attrs)
    attrs["mta.transport"] = get("transtype")
    size = num(get("body"))
    attrs["mta.message.size"] = int(size) if size is not None else None
    attrs["mta.message.md5"] = get("md5")
    if action == "NOQUEUE":
        error = attrs["mta.error"] = red.text(get("error"))
        return f"NOQUEUE {queue_id}: {error or 'not queued'}", iface, size, 0
    rcpts = attrs.get("mta.recipient.count")  # None when recipients are not recorded (mode drop, "<>")
    recipients = rcpts if rcpts is not None else recipient_count(get("to"))
    sender = attrs.get("mta.sender.domain")
    body = f"QUEUED {queue_id} from {sender}" if sender else f"QUEUED {queue_id}"
    if rcpts:
        doms = attrs.get("mta.recipient.domain")
        doms = ", ".join(doms) if type(doms) is list else doms
        body += f" for {rcpts} recipient{'s' if rcpts != 1 else ''} ({doms})"
    if size is not None:
        body += f", {int(size)} bytes"
    if iface:
        body += f" via {iface}"
    return body, iface, size, recipients


def pick_py(d: dict, keys: tuple) -> dict:
    """{k: d.get(k) for k in keys}: the attributes a message's root span keeps."""
    return dict(zip(keys, map(d.get, keys)))


try:  # the C twin (signals/_fields.c)
    from otel_mta.signals import _fields
except ImportError:  # pragma: no cover - exercised where no compiler exists
    delivery_fields = delivery_fields_py
    queued_fields = queued_fields_py
    pick = pick_py
else:
    _fields.setup(privacy.domain_part, smtp_reply)
    delivery_fields = _fields.delivery_fields
    queued_fields = _fields.queued_fields
    pick = _fields.pick
