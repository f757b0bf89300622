"""Where setup.sh put the stack's binaries, and how to skip (or fail) without them."""

from __future__ import annotations

import os
import platform
import shlex
import shutil
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SETUP_HINT = "run `bash tests/stack/setup.sh` first"


def versions() -> dict[str, str]:
    """KEY=VALUE pairs of versions.env (the same file setup.sh sources)."""
    out = {}
    for line in (HERE / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key] = " ".join(shlex.split(value))
    return out


def cache_dir() -> Path:
    return Path(os.environ.get("OTEL_MTA_STACK_CACHE") or REPO / ".cache")


def missing(what: str) -> None:
    """Skip when the stack is not set up; fail instead under CI (or when asked),
    where setup.sh has run and a skip would hide a broken stack."""
    msg = f"{what} not found: {SETUP_HINT}"
    if os.environ.get("CI") == "true" or os.environ.get("OTEL_MTA_STACK_REQUIRED") == "1":
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def tmux_bin() -> str:
    path = shutil.which("tmux")
    if not path:
        missing("tmux")
    return path


def redis_server_bin() -> str:
    path = shutil.which("redis-server")
    if not path:
        missing("redis-server")
    return path


def ferretdb_bin() -> Path:
    path = cache_dir() / "ferretdb" / versions()["FERRETDB_VERSION"] / "ferretdb"
    if not os.access(path, os.X_OK):
        missing(f"FerretDB binary {path}")
    return path


def node_bin() -> Path:
    arch = {"x86_64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), "x64")
    version = versions()["NODE_VERSION"]
    path = cache_dir() / "node" / version / "node_modules" / f"node-linux-{arch}" / "bin" / "node"
    if not os.access(path, os.X_OK):
        missing(f"Node {version} for ZoneMTA and WildDuck ({path})")
    return path


def zonemta_dir() -> Path:
    """The installed @zone-eu/zone-mta package (app.js, plugins/core, ...)."""
    path = HERE / "zonemta" / "node_modules" / "@zone-eu" / "zone-mta"
    if not (path / "app.js").exists():
        missing(f"ZoneMTA ({path})")
    return path


def haraka_dir() -> Path:
    """The installed Haraka package (bin/haraka), the Haraka plugin's dev dependency."""
    path = REPO / "haraka-plugin" / "node_modules" / "Haraka"
    if not (path / "bin" / "haraka").exists():
        missing(f"Haraka ({path})")
    return path


def wildduck_dir() -> Path:
    """The installed @zone-eu/wildduck package (server.js, config/, ...), in the
    shared cache: setup.sh installs it into .cache/wildduck/<version>/."""
    version = versions()["WILDDUCK_VERSION"]
    path = cache_dir() / "wildduck" / version / "node_modules" / "@zone-eu" / "wildduck"
    if not (path / "server.js").exists():
        missing(f"WildDuck {version} ({path})")
    return path


def require_module(name: str):
    try:
        return __import__(name)
    except ImportError:
        missing(f"Python package {name}")
