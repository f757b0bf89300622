"""`otel-mta top`: what this mail node is doing right now, in the terminal.

Reads the sidecar's GET /status (otel_mta/status.py) on its health endpoint
and draws it with `rich` (an optional extra: `pip install 'otel-mta[top]'`;
the sidecar itself never imports it). Live: a screen refreshed every
`--interval` seconds, `q` quits; `--once` prints one plain-text frame; `--json`
prints the status document. docs/top.md shows a screen.

The screen fits the terminal: a table drops its least important columns before
a line would wrap, and sections get fewer rows before the screen would scroll.
"""
from __future__ import annotations

import json
import os
import select
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable

DEFAULT_ENDPOINT = "127.0.0.1:9478"
HINT = "set --endpoint or OTEL_MTA_HEALTH_ENDPOINT"


class Unreachable(Exception):
    """The sidecar's status could not be read; the message says where we looked."""


# -- where and how to ask ------------------------------------------------------------
def status_url(endpoint: str | None) -> str:
    """The status URL for --endpoint / OTEL_MTA_HEALTH_ENDPOINT (`host:port` or a URL).
    A wildcard listen address (0.0.0.0, ::) is reached on loopback."""
    from otel_mta.config import parse_endpoint

    raw = endpoint or os.environ.get("OTEL_MTA_HEALTH_ENDPOINT") or DEFAULT_ENDPOINT
    try:
        parsed = parse_endpoint(raw)
    except ValueError as err:
        raise Unreachable(f"otel-mta top: bad health endpoint {raw!r}: {err}") from None
    if parsed is None:
        raise Unreachable(f"otel-mta top: the sidecar's health endpoint is off ({raw!r}); "
                          "otel-mta top reads /status there")
    host, port = parsed
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/status"


def fetch(url: str, top: int, timeout: float = 2.0) -> dict:
    try:
        with urllib.request.urlopen(f"{url}?top={top}", timeout=timeout) as reply:
            doc = json.loads(reply.read())
    except urllib.error.HTTPError as err:
        what = "no /status there (an older sidecar?)" if err.code == 404 else f"HTTP {err.code}"
        raise Unreachable(f"otel-mta top: {url}: {what}") from None
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        reason = getattr(reason, "strerror", None) or str(reason)
        raise Unreachable(f"otel-mta top: no sidecar answering at {url} ({reason}); {HINT}") from None
    if not isinstance(doc, dict) or doc.get("schema") != "otel-mta.status/v1":
        raise Unreachable(f"otel-mta top: {url} did not answer with an otel-mta status document")
    return doc


# -- formatting ------------------------------------------------------------------------
def age(seconds) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def count(n) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e4)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}" if unit != "k" else f"{n / 1e3:.0f}k"
    return f"{n:.1f}" if n != int(n) else str(int(n))


def rate(n) -> str:
    return "-" if n is None else f"{n:.1f}" if n < 1000 else count(n)


def size(n) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def reasons(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]) if v) or "-"


STATE_STYLE = {"ok": "green", "failing": "bold red", "down": "bold red", "starting": "yellow"}


@dataclass
class Col:
    title: str
    width: int
    get: Callable[[dict], str]
    priority: int = 0          # lower is kept longer when the terminal is narrow
    left: bool = False
    flex: bool = False         # takes the width left over
    style: Callable[[dict], str | None] | None = None


def table(cols: list[Col], rows: list[dict], width: int, empty: str):
    """Header + rows as rich Text lines: columns by priority while they fit."""
    from rich.text import Text

    chosen, used = [], 0
    for col in sorted(cols, key=lambda c: c.priority):
        need = col.width + (1 if chosen else 0)
        if used + need <= width:
            chosen.append(col)
            used += need
    chosen.sort(key=cols.index)
    spare = width - used
    widths = [c.width + (spare if c.flex else 0) for c in chosen]

    def line(cells, styles, header=False):
        t = Text(no_wrap=True, overflow="ellipsis")
        for i, (cell, w, c, st) in enumerate(zip(cells, widths, chosen, styles)):
            if i:
                t.append(" ")
            cell = cell if len(cell) <= w else (cell[: max(w - 1, 0)] + "…")
            t.append(cell.ljust(w) if c.left or c.flex else cell.rjust(w), style=st or ("bold" if header else None))
        t.truncate(width, overflow="ellipsis")
        t.rstrip()
        return t

    lines = [line([c.title for c in chosen], [None] * len(chosen), header=True)]
    for row in rows:
        lines.append(line([c.get(row) for c in chosen], [c.style(row) if c.style else None for c in chosen]))
    if not rows:
        lines.append(Text(empty[:width], style="dim"))
    return lines


ZONES = [
    Col("ZONE", 14, lambda z: str(z["zone"] if z["zone"] is not None else "(none)"), 0, left=True),
    Col("ACTIVE", 7, lambda z: count(z["queue"]["active"]), 0),
    Col("DEFERRED", 8, lambda z: count(z["queue"]["deferred"]), 0),
    Col("OLDEST", 7, lambda z: age(max([v for v in z["oldest_age_s"].values() if v is not None], default=None)), 1),
    Col("DELIVERED/m", 11, lambda z: rate(z["per_minute"]["delivered"]), 0),
    Col("DEFERRED/m", 10, lambda z: rate(z["per_minute"]["deferred"]), 1,
        style=lambda z: "yellow" if z["per_minute"]["deferred"] else None),
    Col("REJECTED/m", 10, lambda z: rate(z["per_minute"]["rejected"]), 1,
        style=lambda z: "red" if z["per_minute"]["rejected"] else None),
]
DOMAINS = [
    Col("RECIPIENT DOMAIN", 18, lambda d: d["domain"], 0, left=True),
    Col("DEFER", 6, lambda d: count(d["deferred"]), 0, style=lambda d: "yellow" if d["deferred"] else None),
    Col("REJECT", 6, lambda d: count(d["rejected"]), 0, style=lambda d: "red" if d["rejected"] else None),
    Col("OK", 5, lambda d: count(d["delivered"]), 3),
    Col("LAST REPLY", 14, lambda d: (d["last_reply"] or {}).get("reply") or "-", 1, flex=True),
    Col("AGO", 6, lambda d: age((d["last_reply"] or {}).get("age_s")), 2),
]
IPS = [
    Col("SENDING IP", 18, lambda i: i["ip"], 0, left=True),
    Col("ATTEMPTS", 8, lambda i: count(i["attempts"]), 0),
    Col("DEFERRED", 8, lambda i: count(i["deferred"]), 2),
    Col("REJECTED", 8, lambda i: count(i["rejected"]), 1),
    Col("REJECT %", 8, lambda i: f"{i['reject_ratio'] * 100:.1f}%", 0,
        style=lambda i: "red" if i["reject_ratio"] >= 0.05 else None),
]


def _source_detail(s: dict) -> str:
    if s["kind"] == "poller":
        if s["state"] == "failing":
            return f"{s.get('last_error') or 'failing'}; failures: {reasons(s['failures'])}"
        ago = s.get("last_success_age_s")
        return f"polled {age(ago)} ago" if ago is not None else "waiting for the first poll"
    parts = []
    if any(s["refused"].values()):
        parts.append("refused: " + reasons(s["refused"]))
    if any(s["dropped"].values()):
        parts.append("dropped: " + reasons(s["dropped"]))
    return "; ".join(parts) or "nothing refused or dropped"


SOURCES = [
    Col("SOURCE", 12, lambda s: s["name"], 0, left=True),
    Col("STATE", 8, lambda s: s["state"], 0, left=True, style=lambda s: STATE_STYLE.get(s["state"])),
    Col("REC/S", 8, lambda s: rate(s.get("records_per_s")) if s["kind"] == "receiver" else "-", 0),
    Col("REFUSED / DROPPED (SINCE START)", 20, _source_detail, 1, flex=True,
        style=lambda s: "red" if s["kind"] == "receiver" and (any(s["refused"].values()) or
                                                               any(s["dropped"].values())) else None),
]


def export_lines(e: dict, width: int):
    from rich.text import Text

    head = Text(no_wrap=True, overflow="ellipsis")
    head.append("EXPORT ", style="bold")
    head.append(f"{e['exporter']} ")
    head.append(e["state"], style=STATE_STYLE.get(e["state"]))
    head.append(f" → {e['endpoint']}")
    if e.get("last_error") and e["state"] != "ok":
        head.append(f"  {e['last_error']}", style="red")
    q, sp = e["queue"], e["spool"]
    failed = sum(e["failed"].values())
    body = Text(no_wrap=True, overflow="ellipsis")
    body.append(f"queue {size(q['bytes'])} / {size(q['capacity'])}")
    body.append(f"  spool {size(sp['bytes'])} / {size(sp['capacity'])}" if sp else "  spool off")
    body.append("  failed ")
    body.append(reasons(e["failed"]) if failed else "0", style="red" if failed else None)
    body.append(f"  retries {e['retries']}  sent {count(e['sent']['logs'])} logs {count(e['sent']['traces'])} spans")
    for t in (head, body):
        t.truncate(width, overflow="ellipsis")
    return [head, body]


def frame(doc: dict, width: int, height: int | None):
    """The screen's lines (rich Text). `height` None: every row the document has."""
    from rich.text import Text

    title = Text(no_wrap=True, overflow="ellipsis")
    title.append("otel-mta top", style="bold")
    title.append(f"  {doc['host']}  up {age(doc['uptime_s'])}  {doc['time'][11:19]}Z  "
                 f"rates over the last {age(doc['window_s'])}")
    title.truncate(width, overflow="ellipsis")
    # shown in this order; when rows are short, each gets a header and one row, then
    # more rows go to the sources, the zones, the domains and the IPs, in that order
    sections = {
        "zones": (ZONES, doc["zones"], "no zone seen yet (ZoneMTA's API and remote log tell the zones)"),
        "domains": (DOMAINS, doc["domains"], "no deferral or rejection in the window"),
        "ips": (IPS, doc["sending_ips"], "no delivery attempt in the window"),
        "sources": (SOURCES, doc["sources"], "no source enabled"),
    }
    rows = {name: list(data) for name, (_, data, _) in sections.items()}
    if height is not None:
        budget = height - 1 - 2 - 2 * len(sections)   # title, export, a header and a first row each
        for name in ("sources", "zones", "domains", "ips"):
            want = max(len(rows[name]) - 1, 0)
            if name == "domains" and rows["ips"]:   # leave the sending IPs a third of what is left
                want = min(want, budget - budget // 3)
            give = max(min(want, budget), 0)
            budget -= give
            rows[name] = rows[name][: give + 1]
    lines = [title]
    for name, (cols, _, empty) in sections.items():
        lines += table(cols, rows[name], width, empty)
    lines += export_lines(doc["export"], width)
    return lines[:height] if height is not None else lines


# -- the command -------------------------------------------------------------------------
class Keys:
    """`q` from the terminal without Enter (cbreak mode), restored on exit."""

    def __init__(self):
        self.fd = sys.stdin.fileno() if sys.stdin and sys.stdin.isatty() else None
        self._saved = None

    def __enter__(self):
        if self.fd is not None:
            import termios
            import tty

            self._saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)

    def quit_within(self, seconds: float) -> bool:
        """Wait up to `seconds`; True if `q` was pressed."""
        if self.fd is None:
            time.sleep(seconds)
            return False
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                ch = os.read(self.fd, 32)
                if not ch or b"q" in ch.lower():
                    return True
        return False


def run(args) -> int:
    try:
        url = status_url(args.endpoint)
    except Unreachable as err:
        print(err, file=sys.stderr)
        return 2
    rows = args.top
    if args.json:
        try:
            doc = fetch(url, rows or 10)
        except Unreachable as err:
            print(err, file=sys.stderr)
            return 1
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    try:
        from rich.console import Console
        from rich.console import Group
        from rich.live import Live
        from rich.text import Text
    except ImportError:
        print("otel-mta top needs the 'rich' package: pip install 'otel-mta[top]' "
              "(or use --json)", file=sys.stderr)
        return 2
    if args.once:
        console = Console(color_system=None, highlight=False, emoji=False)   # plain text
        try:
            doc = fetch(url, rows or 10)
        except Unreachable as err:
            print(err, file=sys.stderr)
            return 1
        for line in frame(doc, console.width, None):
            console.print(line, soft_wrap=False, crop=True)
        return 0
    console = Console(highlight=False, emoji=False)   # colour only on a terminal (and not with NO_COLOR)

    def screen(width: int, height: int | None) -> list:
        try:
            doc = fetch(url, min(rows or max(height or 10, 10), 50), timeout=min(max(args.interval, 0.5), 5.0))
            return frame(doc, width, height)
        except Unreachable as err:
            return [Text(f"{err}; retrying every {args.interval:g}s"[:width], style="bold red")]

    try:
        if not console.is_terminal:   # piped: a plain frame every interval, like `top -b`
            console = Console(color_system=None, highlight=False, emoji=False)
            while True:
                for line in screen(console.width, None):
                    console.print(line, soft_wrap=False, crop=True)
                console.print()
                time.sleep(args.interval)
        with Keys() as keys, Live(console=console, screen=True, auto_refresh=False,
                                  redirect_stdout=False, redirect_stderr=False) as live:
            while True:
                try:   # the terminal itself (COLUMNS / LINES in the environment can be stale)
                    width, height = os.get_terminal_size(sys.stdout.fileno())
                except OSError:
                    width, height = console.size
                console.size = (width, height)
                live.update(Group(*screen(width, height)), refresh=True)
                if keys.quit_within(args.interval):
                    return 0
    except KeyboardInterrupt:
        return 0
