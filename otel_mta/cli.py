"""The `otel-mta` command: run, check, top, trace-id, --version."""
from __future__ import annotations

import argparse
import logging
import sys

from otel_mta import __version__


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="otel-mta",
        description="OpenTelemetry for ZoneMTA, WildDuck, Haraka, MongoDB and Redis: receives their "
                    "logs and events, polls their status, and exports OTLP logs, traces and metrics.",
        epilog="Configuration: a YAML file and OTEL_* / OTEL_MTA_* environment variables "
               "(environment wins); see docs/configuration.md.")
    p.add_argument("--version", action="version", version=f"otel-mta {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in (("run", "receive, poll and export until SIGTERM/SIGINT"),
                       ("check", "validate the configuration and try every source and the exporter once")):
        sp = sub.add_parser(name, help=text, description=text)
        sp.add_argument("--config", "-c", metavar="FILE", help="YAML configuration file")
    text = "live view of this node: queues, deliveries, failing domains, sources and export (q quits)"
    top = sub.add_parser("top", help=text, description=text + ". It reads GET /status on the running "
                         "sidecar's health endpoint.", epilog="docs/top.md shows a screen.")
    top.add_argument("--endpoint", metavar="HOST:PORT",
                     help="the sidecar's health endpoint (default: $OTEL_MTA_HEALTH_ENDPOINT, else 127.0.0.1:9478)")
    top.add_argument("--interval", type=_positive, default=1.0, metavar="SECONDS", help="seconds between refreshes (default 1)")
    top.add_argument("--once", action="store_true", help="print one frame as plain text and exit")
    top.add_argument("--json", action="store_true", help="print the status as JSON and exit")
    top.add_argument("--top", type=int, choices=range(1, 51), default=None, metavar="N",
                     help="rows per table, 1-50 (default: 10, or what fits the screen)")
    text = "print the trace id of a message, from its Message-ID, its ZoneMTA queue id or its Haraka transaction uuid"
    tp = sub.add_parser(
        "trace-id", help=text, description=text + ". A queue id or transaction uuid is resolved by the running "
        "sidecar, which knows the Message-IDs of the messages it saw queued or received (docs/trace-ids.md).",
        epilog="examples:\n  otel-mta trace-id '<20240101.1234@mail.example.org>'\n"
               "  otel-mta trace-id 18c5f3d2a3e0001234 --endpoint otel-mta.mail:9478\n"
               "  otel-mta trace-id 5B6F1C2A-0E55-4E0C-9D0C-3C9C4B2A1F00.1 --endpoint haraka-0.mail:9478\n"
               "  otel-mta trace-id 18c5f3d2a3e0001234 --url-template 'http://jaeger:16686/trace/{trace_id}'",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    tp.add_argument("id", help="a Message-ID (with or without <>), a ZoneMTA queue id (18c5f3d2a3e0001234, "
                               "or 18c5f3d2a3e0001234.002 from a log line) or a Haraka transaction uuid "
                               "(5B6F1C2A-0E55-4E0C-9D0C-3C9C4B2A1F00.1, as Haraka's log lines show it)")
    kind = tp.add_mutually_exclusive_group()
    kind.add_argument("--message-id", dest="kind", action="store_const", const="message-id",
                      help="take ID as a Message-ID (default: guessed: an @ or <> makes a Message-ID, hex a queue "
                           "id, a uuid a Haraka transaction)")
    kind.add_argument("--queue-id", dest="kind", action="store_const", const="queue-id",
                      help="take ID as a ZoneMTA queue id or a Haraka transaction uuid")
    tp.add_argument("--endpoint", metavar="HOST:PORT",
                    help="the sidecar's health endpoint, for queue ids and transaction uuids (default: "
                         "$OTEL_MTA_HEALTH_ENDPOINT, "
                         "else 127.0.0.1:9478)")
    tp.add_argument("--url-template", metavar="URL",
                    help="also print this URL with {trace_id} replaced: a link into Grafana Explore, Tempo or "
                         "Jaeger (default: $OTEL_MTA_TRACE_URL_TEMPLATE)")
    tp.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS", help="for the sidecar (default 5)")
    return p


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError("expected seconds from 0.1 to 3600")
    return value


def _trace_id(args) -> int:
    """Prints the trace id (and the link) on stdout, how it was found on stderr."""
    import os

    from otel_mta import lookup

    template = args.url_template or os.environ.get("OTEL_MTA_TRACE_URL_TEMPLATE") or None
    try:
        if lookup.kind_of(args.id, args.kind) == "message-id":
            answer = lookup.from_message_id(args.id)
        else:
            endpoint = args.endpoint or os.environ.get("OTEL_MTA_HEALTH_ENDPOINT")
            answer = lookup.from_queue_id(args.id, endpoint, args.timeout)
        url = lookup.link(template, answer.trace_id) if template else None
    except lookup.LookupFailed as err:
        print(f"otel-mta trace-id: {err}", file=sys.stderr)
        return 1
    print(answer.how, file=sys.stderr)
    print(answer.trace_id)
    if url:
        print(url)
    return 0


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S%z")
    for noisy in ("aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.command:
        _parser().print_help()
        return 2
    if args.command == "top":   # a client of the running sidecar: no configuration of its own
        from otel_mta.top import run

        return run(args)
    if args.command == "trace-id":   # needs no configuration
        return _trace_id(args)
    from otel_mta import config

    try:
        settings = config.load(args.config)
    except config.ConfigError as err:
        print(str(err), file=sys.stderr)
        return 2
    _setup_logging(settings.log_level)
    from otel_mta import aio

    if args.command == "check":
        from otel_mta.check import run_check

        return aio.run(run_check(settings))
    from otel_mta.app import App

    async def _run() -> int:
        return await App(settings).run()

    # not asyncio.run: it waits forever for a task that swallows its cancel
    return aio.run(_run())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
