"""Personal data and cardinality: what may leave the sidecar, and how much.

Addresses, subjects, user names and client addresses are personal data. Each
has a mode set in `privacy.*` (docs/privacy.md):

    domain  keep only the domain of an address (recipients and senders)
    hmac    domain plus an HMAC-SHA256 of the full value under `privacy.hmac_key`
            (stable pseudonym: the same address gives the same hash)
    full    keep the value as is
    drop    keep nothing

Free text that ZoneMTA copies from remote servers (SMTP replies, errors) often
quotes the recipient; addresses inside it are masked unless recipients are `full`.
"""
from __future__ import annotations

import hashlib
import hmac
import re

ADDRESS_IN_TEXT = re.compile(r"[^\s<>\"'(),;:\[\]]+@([A-Za-z0-9.-]+\.[A-Za-z]{2,63})")


_DOMAINS: dict = {}  # text after the "@" -> domain: addresses rarely repeat, their domains do
_UNSEEN = object()


def domain_part(part: str) -> str | None:
    """The domain in the text after an address's last "@" (memoised)."""
    dom = _DOMAINS.get(part, _UNSEEN)
    if dom is _UNSEEN:
        dom = part.strip().rstrip(">").strip().lower() or None
        if len(_DOMAINS) >= 10_000:  # bounded: hostile input cannot grow it
            _DOMAINS.clear()
        _DOMAINS[part] = dom
    return dom


def domain_of(address: str | None) -> str | None:
    """The lowercased domain of an address (also of `Name <a@b>` forms)."""
    if not address or type(address) is not str:
        return None
    at = address.rfind("@")
    return domain_part(address[at + 1:]) if at >= 0 else None


MODES = {"drop": 0, "domain": 1, "hmac": 2, "full": 3}  # as numbers, for signals/_fields.c
_KEYS: dict = {}  # prefix -> its .domain / .address / .hash attribute names (a few fixed prefixes)


def _keys(prefix: str) -> tuple:
    keys = _KEYS[prefix] = (prefix + ".domain", prefix + ".address", prefix + ".hash")
    return keys


class Redactor:
    def __init__(self, recipient="domain", sender="domain", subject="drop",
                 user="drop", client="drop", hmac_key: bytes | None = None):
        self.recipient = recipient
        self.sender = sender
        self.subject = subject
        self.user = user
        self.client = client
        self._key = hmac_key
        self.mask_text = recipient != "full"
        # what signals/_fields.c reads of this object
        self.policy = (MODES[recipient], MODES[sender], self.mask_text, self.text, self.hash,
                       MODES[subject], MODES[user], MODES[client])

    def hash(self, value: str) -> str:
        # config validation guarantees a key whenever a mode is "hmac"
        return hmac.new(self._key, value.strip().lower().encode(), hashlib.sha256).hexdigest()[:32]

    def address(self, prefix: str, value: str | None, mode: str, out: dict) -> None:
        """Write `<prefix>.domain` and, by mode, `.address` / `.hash` into out."""
        if mode == "drop" or not value or type(value) is not str:
            return
        keys = _KEYS.get(prefix) or _keys(prefix)
        # domain_of(value), with its memo lookup inlined: three calls per delivery
        at = value.rfind("@")
        dom = _DOMAINS.get(value[at + 1:], _UNSEEN) if at >= 0 else None
        out[keys[0]] = domain_part(value[at + 1:]) if dom is _UNSEEN else dom
        if mode == "full":
            out[keys[1]] = value
        elif mode == "hmac":
            out[keys[2]] = self.hash(value)

    def address_list(self, prefix: str, value: str | None, mode: str, out: dict) -> None:
        """Like address() for ZoneMTA's comma-joined recipient lists."""
        if mode == "drop" or not value or type(value) is not str or value == "<>":
            return
        addrs = [a.strip() for a in value.split(",") if a.strip()]
        out[prefix + ".count"] = len(addrs)
        domains = sorted({d for d in map(domain_of, addrs) if d})
        if domains:
            out[prefix + ".domain"] = domains[0] if len(domains) == 1 else domains
        if mode == "full":
            out[prefix + ".address"] = addrs
        elif mode == "hmac":
            out[prefix + ".hash"] = [self.hash(a) for a in addrs]

    def value(self, key: str, value, mode: str, out: dict) -> None:
        """A non-address personal value (subject, user name, client address)."""
        if mode == "drop" or value is None or value == "":
            return
        if mode == "hmac":
            out[key + "_hash"] = self.hash(str(value))
        else:
            out[key] = value

    def text(self, value):
        """Free text with any e-mail address reduced to `***@domain`."""
        if not self.mask_text or type(value) is not str or "@" not in value:
            return value
        return ADDRESS_IN_TEXT.sub(r"***@\1", value)


class TopN:
    """Keeps a metric attribute's distinct values to about N; the rest are "other".

    Counts are kept for up to 8*N values; values are admitted while fewer than N
    are admitted, and `rerank()` (before each metric export) admits the N most
    counted since the last reranks (counts halve each time, so it follows change).
    """

    OTHER = "other"

    def __init__(self, n: int):
        self.n = n
        self._admitted: set = set()
        self._counts: dict = {}
        self._capacity = max(8 * n, 16)

    def __call__(self, value):
        if value is None:
            return None
        counts = self._counts
        c = counts.get(value)
        if c is not None:
            counts[value] = c + 1
        elif len(counts) < self._capacity:
            counts[value] = 1
        if value in self._admitted:
            return value
        if len(self._admitted) < self.n:
            self._admitted.add(value)
            return value
        return self.OTHER

    def rerank(self) -> None:
        ranked = sorted(self._counts, key=self._counts.get, reverse=True)
        self._admitted = set(ranked[: self.n])
        self._counts = {v: self._counts[v] // 2 for v in ranked[: self._capacity // 2]}
