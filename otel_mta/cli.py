"""The `otel-mta` command: run, check, --version."""
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
    return p


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
