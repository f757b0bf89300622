"""An SMTP server (aiosmtpd) that ZoneMTA delivers to, with scripted replies.

By default every recipient gets 250. `reply()` scripts an answer for
recipients that contain a given string, e.g. "451 4.3.0 Try again later" to
make ZoneMTA defer or "550 5.1.1 No such user" to make it reject; with
`client=` only for connections from that address, as a receiver that checks
the sending IP against a blocklist answers (ZoneMTA binds a zone's pool
address, e.g. 127.0.0.2, for its outgoing connections).
"""

from __future__ import annotations

import email
import threading
import time
from dataclasses import dataclass, field

from . import paths
from .proc import LOOPBACK, free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: tuple
    time: float = field(default_factory=time.time)

    @property
    def message(self) -> email.message.Message:
        return email.message_from_bytes(self.data)


@dataclass
class Refused:
    stage: str       # "rcpt" or "data"
    address: str
    response: str


class SmtpSink:
    def __init__(self):
        controller_mod = paths.require_module("aiosmtpd.controller")
        self.host = LOOPBACK
        self.port = free_port()
        self.messages: list[Received] = []
        self.refused: list[Refused] = []
        self._rules: list[tuple[str, str, str, str | None]] = []
        self._cond = threading.Condition()
        self.controller = controller_mod.controller.Controller(
            _Handler(self), hostname=self.host, port=self.port, ready_timeout=10)
        self.controller.start()

    def reply(self, contains: str, response: str, stage: str = "rcpt", client: str | None = None) -> None:
        """Answer `response` for recipients containing `contains` (case-insensitive),
        at RCPT TO (stage="rcpt") or after DATA (stage="data"); with `client`,
        only to connections from that IP address."""
        assert stage in ("rcpt", "data")
        with self._cond:
            self._rules.append((contains.lower(), response, stage, client))

    def response_for(self, address: str, stage: str, client: str | None = None) -> str | None:
        with self._cond:
            for contains, response, rule_stage, rule_client in reversed(self._rules):
                if rule_stage == stage and contains in address.lower() and rule_client in (None, client):
                    return response
        return None

    def wait_for_messages(self, count: int = 1, timeout: float = 30) -> list[Received]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= count, timeout):
                raise AssertionError(
                    f"SMTP sink got {len(self.messages)} messages, wanted {count} within {timeout}s")
            return list(self.messages)

    def wait_for_refused(self, count: int = 1, timeout: float = 30) -> list[Refused]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.refused) >= count, timeout):
                raise AssertionError(
                    f"SMTP sink refused {len(self.refused)} times, wanted {count} within {timeout}s")
            return list(self.refused)

    def _record(self, item) -> None:
        with self._cond:
            (self.messages if isinstance(item, Received) else self.refused).append(item)
            self._cond.notify_all()

    def stop(self) -> None:
        self.controller.stop()


class _Handler:
    def __init__(self, sink: SmtpSink):
        self.sink = sink

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        response = self.sink.response_for(address, "rcpt", session.peer[0])
        if response and not response.startswith("2"):
            self.sink._record(Refused("rcpt", address, response))
            return response
        envelope.rcpt_tos.append(address)
        return response or "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        for address in envelope.rcpt_tos:
            response = self.sink.response_for(address, "data", session.peer[0])
            if response and not response.startswith("2"):
                self.sink._record(Refused("data", address, response))
                return response
        self.sink._record(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                   bytes(envelope.original_content or envelope.content),
                                   session.peer))
        return "250 2.0.0 OK queued by otel-mta test sink"
