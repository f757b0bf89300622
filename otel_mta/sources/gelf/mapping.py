"""A decoded GELF message -> an OpenTelemetry log record (docs/gelf.md).

- Timestamp from `timestamp` (seconds, fractions allowed); severity from the
  syslog `level` 0-7 by the OpenTelemetry data model's table (Appendix B);
  body = `short_message`; the producing `host` becomes the resource's host.name.
- Attribute naming rule: the GELF fields in FIELDS below get semantic
  convention / `mta.*` / `wildduck.*` names; every other additional field
  `_foo` becomes `gelf.foo` (and a non-standard field without underscore,
  `foo`, also `gelf.foo`). `_id` is reserved by GELF and dropped.
- The producer (ZoneMTA, WildDuck, Haraka, or anything else) names the
  resource's service.name and decides what `_message_id` means: in ZoneMTA it
  is the queue id, elsewhere the RFC 5322 Message-ID.
- Trace id: the Message-ID's, else the Message-ID the correlator learned for
  the queue id (from the remote log or the plugin, else from other GELF
  messages), else the queue id's — the derivation ZoneMTA's own telemetry
  uses (docs/trace-ids.md), so a WildDuck log joins ZoneMTA's trace. What a
  GELF message says about a queue id is only a hint for other GELF records:
  GELF is unauthenticated, so it never moves ZoneMTA's own entries.
- Personal fields follow privacy.* and their values are masked wherever they
  are echoed in the body or in other text; e-mail addresses in any text are
  reduced to ***@domain unless recipients are `full`.
"""
from __future__ import annotations

import re

import orjson

from otel_mta import ids
from otel_mta.model import LogLine
from otel_mta.privacy import TopN
from otel_mta.sources.gelf.decode import GelfError, depth_ok

# OpenTelemetry log data model, Appendix B: syslog severity -> SeverityNumber
SYSLOG_SEVERITY = (21, 19, 18, 17, 13, 10, 9, 5)
SYSLOG_TEXT = ("Emergency", "Alert", "Critical", "Error", "Warning", "Notice", "Informational", "Debug")
INFO, WARN, ERROR = 9, 13, 17

ZONEMTA, WILDDUCK, HARAKA = "zonemta", "wildduck", "haraka"

# ZoneMTA: `<COMPONENT> [<CODE>] text` (lib/log-gelf.js, docs/LOGGING_GELF_CODES.md)
_ZONEMTA_CODE = re.compile(r"^([A-Z0-9_.-]+) \[([A-Z][A-Z0-9_]*)\]")
# the codes ZoneMTA 3.10 emits (docs/LOGGING_GELF_CODES.md): with an unknown
# component, `<COMPONENT> [<one of these>]` is recognised as ZoneMTA
ZONEMTA_CODES = frozenset("""
    API_START_FAILED BOUNCE_RULES_LOAD_FAILED BOUNCE_RULE_REGEX_INVALID BOUNCE_SEND_FAILED
    DELIVERY_ACK_FAILED DELIVERY_DEFER_FAILED DELIVERY_RELEASE_FAILED DELIVERY_UNEXPECTED_STATE
    DNS_REDIS_GET_FAILED DNS_REDIS_SET_FAILED DNS_REVERSE_FAILED FETCH_LOAD_FAILED
    MTA_STS_REDIS_ERROR MX_CONNECT_ERROR MX_CONNECT_FAILED MX_UNEXPECTED_ERROR
    QUEUE_CONNECT_FAILED QUEUE_CONNECTION_CLOSED QUEUE_CONNECTION_ERROR QUEUE_COUNTERS_FAILED
    QUEUE_DB_INIT_FAILED QUEUE_DELAYED_HOOK_FAILED QUEUE_DELETE_FAILED QUEUE_ERROR
    QUEUE_FETCH_FAILED QUEUE_FETCH_UNEXPECTED QUEUE_GC_FAILED QUEUE_INDEX_CREATE_FAILED
    QUEUE_INIT_FAILED QUEUE_META_FAILED QUEUE_META_FETCH_FAILED QUEUE_PUSH_FAILED
    QUEUE_REQUEST_FAILED QUEUE_SERVER_START_FAILED QUEUE_STORE_FAILED REDIS_CONNECTION_ERROR
    SENDER_DELIVERED_HOOK_FAILED SENDER_EXITED SENDER_START_TIMEOUT SENDER_UNKNOWN_ZONE
    SETGID_FAILED SETUID_FAILED SMTP_CONNECTION_ERROR SMTP_ERROR SMTP_FILE_ACCESS_FAILED
    SMTP_QUEUE_INIT_FAILED SMTP_RECEIVER_EXITED SMTP_RECEIVER_START_FAILED SMTP_SERVER_ERROR
    SMTP_SOCKET_ERROR SMTP_START_FAILED SMTP_TLS_SETUP_FAILED UNCAUGHT_EXCEPTION
""".split())
# WildDuck: `WILDDUCK [TAG] text`; a FAIL tag or an exception is a failure
_TAG = re.compile(r"^\S+ \[([^\]]{1,40})\]")
# Haraka's own log line shape: `[LEVEL] [uuid] [plugin] text`
_HARAKA_LINE = re.compile(r"^\[[A-Z]+\] \[[0-9A-F-]{36}(?:\.\d+)?\] ")

# how each GELF field is handled (not listed: `_foo` -> gelf.foo)
SKIP, RENAME, TEXT, USER, CLIENT, SENDER, RECIPIENT, SUBJECT, MSGID, QID, TARGET_QID, CODE_LINE, CODE = range(13)
FIELDS = {
    "version": (SKIP, None), "host": (SKIP, None), "short_message": (SKIP, None),
    "timestamp": (SKIP, None), "level": (SKIP, None), "_id": (SKIP, None),
    "full_message": (TEXT, "gelf.full_message"),
    "facility": (RENAME, "gelf.facility"),
    "file": (RENAME, "code.file.path"), "_file": (RENAME, "code.file.path"),
    "line": (CODE_LINE, "code.line.number"), "_line": (CODE_LINE, "code.line.number"),
    "_pid": (RENAME, "process.pid"),
    "_sess": (RENAME, "session.id"), "_session_id": (RENAME, "session.id"),
    "_error": (TEXT, "error.message"), "_failure_msg": (TEXT, "error.message"),
    "_stack": (TEXT, "exception.stacktrace"),
    "_code": (CODE, "error.type"),     # error.type for a failure, else gelf.code (see map())
    "_mail_action": (RENAME, "wildduck.action"),
    "_delivery_seq": (RENAME, "mta.delivery.seq"),
    "_queue_id": (QID, "mta.queue_id"), "_delivery_id": (QID, "mta.queue_id"),
    "_target_queue_id": (TARGET_QID, "wildduck.forward.queue_id"),
    "_message_id": (MSGID, "mta.message_id"),
    "_user": (USER, "user.id"), "_username": (USER, "user.name"),
    "_ip": (CLIENT, "client.address"), "_remoteAddress": (CLIENT, "client.address"),
    "_remote_ip": (CLIENT, "client.address"), "_client_ip": (CLIENT, "client.address"),
    "_from": (SENDER, "mta.sender"), "_sender": (SENDER, "mta.sender"),
    "_to": (RECIPIENT, "mta.recipient"), "_recipient": (RECIPIENT, "mta.recipient"),
    "_rcpt_to": (RECIPIENT, "mta.recipient"),
    "_target_address": (RECIPIENT, "wildduck.forward.target"),
    "_subject": (SUBJECT, "mta.subject"),
    # WildDuck's API lines (api.js)
    "_http_route": (RENAME, "http.route"), "_http_method": (RENAME, "http.request.method"),
    "_req_remoteAddress": (CLIENT, "client.address"),
}
# WildDuck's API lines also echo every request parameter as `_req_<name>` and
# the new object's id as `_res_id`: user names, real names, addresses, account
# ids, key material. They are not passed through.
WILDDUCK_ECHO = ("_req_", "_res_")
# attribute keys whose values repeat: their encoded form is cached
CACHED = frozenset({"gelf.facility", "gelf.component", "wildduck.action", "wildduck.result", "zonemta.code",
                    "error.type", "gelf.code", "code.file.path", "gelf.logger"})
PASSTHROUGH = "gelf."
_MAX_KEY = 256


def _seconds_to_ns(value) -> int | None:
    t = type(value)
    if t is str:
        try:
            value = float(value)
        except ValueError:
            return None
    elif t is not float and t is not int:
        return None
    if not 0 < value < 1e11:  # before year 5138 (NaN fails the test too)
        return None
    return int(round(value * 1e6)) * 1000


def _level(value) -> int | None:
    t = type(value)
    if t is str and len(value) == 1 and "0" <= value <= "7":
        return int(value)
    if (t is int or t is float) and 0 <= value <= 7:
        return int(value)
    return None


class GelfMapper:
    def __init__(self, pipeline, settings):
        self.pipeline = pipeline
        self.red = pipeline.redactor
        self.corr = pipeline.correlator
        self.max_depth = settings.max_depth
        self.max_fields = settings.max_fields
        self.producers = {k.lower(): v for k, v in settings.producers.items()}
        self.zonemta_service = pipeline.settings.resource.zonemta_service_name
        self.max_hosts = settings.max_hosts
        self._services = {self.zonemta_service, WILDDUCK, HARAKA, *self.producers.values()}
        self._resources: dict = {}
        self._by_component: dict = {}      # `_component`/facility -> known producer or False (bounded)
        self._names: dict = {}             # GELF key -> attribute key (bounded)
        self.hosts_overflowed = 0
        m = pipeline.metrics
        self.m_actions = m.counter("wildduck.mail.actions")
        self.m_zonemta_errors = m.counter("zonemta.errors")
        self.top_action = TopN(100)
        self.top_code = TopN(100)
        m.before_collect(self.top_action.rerank)
        m.before_collect(self.top_code.rerank)
        red = self.red
        self._modes = {USER: red.user, CLIENT: red.client, SUBJECT: red.subject,
                       SENDER: red.sender, RECIPIENT: red.recipient}

    # -- producer ------------------------------------------------------------
    def producer(self, msg: dict, short: str) -> tuple[str, str]:
        """(kind, service.name): kind is zonemta | wildduck | haraka | generic."""
        comp = msg.get("_component")
        if type(comp) is not str:
            comp = msg.get("facility")
        if type(comp) is str:
            known = self._by_component.get(comp)
            if known is None:
                known = self.producers.get(comp.lower(), False)
                if len(self._by_component) < 1000:
                    self._by_component[comp] = known
            if known:
                return self._kind(known)
        if "_mail_action" in msg:
            return WILDDUCK, WILDDUCK
        if " [" in short[:48]:   # cheap test before the regular expression
            m = _ZONEMTA_CODE.match(short)
            if m and m.group(2) in ZONEMTA_CODES:
                return ZONEMTA, self.zonemta_service
        if short[:1] == "[" and _HARAKA_LINE.match(short) or ("_plugin" in msg and "_uuid" in msg):
            return HARAKA, HARAKA
        if type(comp) is str and comp:
            return "generic", comp[:64]
        return "generic", "unknown_service"

    def _kind(self, known: str) -> tuple[str, str]:
        if known == ZONEMTA:
            return ZONEMTA, self.zonemta_service
        if known == WILDDUCK or known == HARAKA:
            return known, known
        return "generic", known

    def admit(self, service: str, host) -> tuple:
        """The (service, host) to put in the resource. Beyond max_hosts distinct
        pairs, the host (and an unknown service) is left out of the resource and
        kept as an attribute instead, so a hostile sender cannot grow memory."""
        key = (service, host)
        if key in self._resources:
            return key
        if len(self._resources) < self.max_hosts:
            self._resources[key] = self.pipeline.resources.producer(service, host)
            return key
        self.hosts_overflowed += 1
        known = service in self._services or (service, None) in self._resources
        key = (service, None) if known else ("unknown_service", None)
        if key not in self._resources:
            self._resources[key] = self.pipeline.resources.producer(*key)
        return key

    # -- the record --------------------------------------------------------------
    def map(self, msg: dict, observed_ns: int) -> LogLine:
        if len(msg) > self.max_fields:
            raise GelfError("too_many_fields", f"{len(msg)} fields")
        short = msg.get("short_message")
        if type(short) is not str or not short:
            short = msg.get("message")
            if type(short) is not str or not short:
                full = msg.get("full_message")
                if type(full) is not str or not full:
                    raise GelfError("missing_short_message")
                short = full.split("\n", 1)[0]
        kind, service = self.producer(msg, short)
        host = msg.get("host")
        host = host[:255] if type(host) is str and host else None
        red = self.red
        attrs: dict = {}
        res = self._resources.get((service, host))
        if res is None:
            key = self.admit(service, host)
            if key[1] != host:
                attrs["gelf.host"] = host
            if key[0] != service:
                attrs["gelf.service"] = service
            service, host = key
            res = self._resources[key]
        personal: list = []              # raw personal values to mask in text
        qid = mid = target_qid = gelf_code = None
        names = self._names
        for key, value in msg.items():
            rule = FIELDS.get(key)
            if rule is None:
                if value is None or value == "" or kind == WILDDUCK and key.startswith(WILDDUCK_ECHO):
                    continue
                name = names.get(key)
                if name is None:
                    if len(key) > _MAX_KEY or not key:
                        continue
                    name = PASSTHROUGH + (key[1:] if key[0] == "_" else key)
                    if len(names) < 10_000:
                        names[key] = name
                t = type(value)
                if t is str:
                    if "@" in value:
                        value = red.text(value)
                elif t is dict or t is list:
                    if not depth_ok(value, self.max_depth):
                        raise GelfError("too_deep", key)
                    value = red.text(orjson.dumps(value).decode())
                attrs[name] = value
                continue
            how, name = rule
            if how == SKIP or value is None or value == "":
                continue
            if how == RENAME:
                if type(value) in (dict, list):
                    value = orjson.dumps(value).decode() if depth_ok(value, self.max_depth) else None
                attrs[name] = red.text(value) if type(value) is str else value
            elif how == TEXT:
                if type(value) is not str:
                    value = orjson.dumps(value).decode() if depth_ok(value, self.max_depth) else str(type(value))
                attrs[name] = red.text(value)
            elif how == QID:
                if type(value) in (str, int):
                    qid = attrs[name] = str(value)
            elif how == MSGID:
                if kind == ZONEMTA:  # ZoneMTA's _message_id is its queue id
                    if type(value) in (str, int):
                        qid = attrs["mta.queue_id"] = str(value)
                elif type(value) is str:
                    mid = self.corr.normalize(value)
                    attrs[name] = mid
            elif how == TARGET_QID:
                if type(value) is str:
                    target_qid = attrs[name] = value
            elif how == CODE:
                if type(value) in (dict, list):
                    value = orjson.dumps(value).decode() if depth_ok(value, self.max_depth) else None
                gelf_code = red.text(value) if type(value) is str else value
            elif how == CODE_LINE:
                # isdecimal, not isdigit: int() refuses "²"; 18 digits stay within int64
                if type(value) is str and value.isdecimal() and len(value) <= 18:
                    value = int(value)
                attrs[name] = value if type(value) is int else str(value)
            else:
                self._personal(how, name, value, attrs, personal)
        # producer specifics
        level = _level(msg.get("level"))
        result = None
        if kind == ZONEMTA:
            m = _ZONEMTA_CODE.match(short)
            if m:
                code = attrs["zonemta.code"] = m.group(2)
                self.m_zonemta_errors.add(1, res, (self.top_code(code),))
        elif kind == WILDDUCK:
            action = attrs.get("wildduck.action")
            # since 1.46.25 WildDuck moves a non-critical `_error` to `_failure_msg`
            failed = ("_error" in msg or "_failure_msg" in msg or "_exception" in msg
                      or msg.get("_forwarded") == "no" or msg.get("_api_response") == "fail")
            if not failed:
                m = _TAG.match(short)
                failed = bool(m) and ("FAIL" in m.group(1) or m.group(1) == "Exception")
            auth = msg.get("_auth_result")
            if action is None and type(auth) is str and auth:
                action = attrs["wildduck.action"] = "auth"    # [AUTHFAIL] lines carry no _mail_action
            result = "failure" if failed else "success"
            if type(auth) is str and auth:
                result = "success" if auth == "success" else "failure"
            if action is not None:
                attrs["wildduck.result"] = result
                self.m_actions.add(1, res, (self.top_action(str(action)), result))
        # `_code` says what kind of error only on a failure: WildDuck logs `250`
        # on every successful store, which as error.type would make every
        # query for errors find successes
        if gelf_code is not None:
            if kind == WILDDUCK:
                failed = result == "failure" or (level is not None and level <= 3)
            elif level is not None:
                failed = level <= 3             # Error, Critical, Alert, Emergency
            else:   # ZoneMTA's GELF carries only failures; others say so with _error / _exception
                failed = kind == ZONEMTA or "_error" in msg or "_exception" in msg
            if failed:
                attrs["error.type"] = gelf_code if type(gelf_code) is str else str(gelf_code)
            else:
                attrs["gelf.code"] = gelf_code
        # severity
        if level is not None:
            sev, sev_text = SYSLOG_SEVERITY[level], SYSLOG_TEXT[level]
        elif kind == ZONEMTA:
            sev, sev_text = ERROR, None   # ZoneMTA's GELF carries only failures and sets no level
        elif kind == WILDDUCK:
            sev, sev_text = (ERROR if "_exception" in msg else WARN if result == "failure" else INFO), None
        else:
            sev, sev_text = 0, None   # GELF's default (1, ALERT) would page people for nothing
        # correlation: the shared trace-id derivation
        trace_id = span_id = None
        if mid is None and qid is not None:
            mid = self.corr.untrusted_message_id(qid)
            if mid is not None:
                attrs["mta.message_id"] = mid
        if mid is not None:
            # `mid` is normalised already: into the hints as it is
            trace_id = self.corr.trace_for_key("mid:" + mid)
            # unauthenticated: a hint for other GELF records, never the trusted
            # index that places ZoneMTA's own entries (docs/trace-ids.md)
            if qid is not None:
                self.corr.hint(qid, mid)
            if target_qid is not None:
                self.corr.hint(target_qid, mid)
        elif qid is not None:
            key = ids.trace_key(None, qid)
            if key is not None:
                trace_id = self.corr.trace_for_key(key)
        if kind == ZONEMTA and qid is not None and trace_id is not None:
            span_id = self.corr.root_span_id(qid)
        # body: addresses and echoed personal values masked
        body = red.text(short) if "@" in short else short
        if personal:
            for raw in personal:
                if raw in body:
                    body = body.replace(raw, "***")
            full = attrs.get("gelf.full_message")
            if full:
                for raw in personal:
                    if raw in full:
                        full = full.replace(raw, "***")
                attrs["gelf.full_message"] = full
        time_ns = _seconds_to_ns(msg.get("timestamp")) or observed_ns
        return LogLine(time_ns, observed_ns, sev, sev_text, body, attrs, service, host, trace_id, span_id)

    def _personal(self, how: int, name: str, value, attrs: dict, personal: list) -> None:
        red = self.red
        mode = self._modes[how]
        if type(value) is not str:
            value = str(value)
        if mode != "full" and len(value) >= 3:
            personal.append(value)
        if how == SENDER:
            red.address(name, value, mode, attrs)
        elif how == RECIPIENT:
            red.address_list(name, value.replace("\n", ","), mode, attrs)
        else:
            red.value(name, value, mode, attrs)
