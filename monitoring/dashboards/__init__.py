"""The dashboards, generated with grafana-foundation-sdk: one module per
dashboard, each answering its questions for both backend profiles
(common.PROFILES). `generate()` writes
monitoring/generated/dashboards/<profile>/<slug>.json."""
from __future__ import annotations

from pathlib import Path

from monitoring.dashboards import common, dependencies, explorer, outbound, pipeline, queues

BOARDS = [outbound.BOARD, queues.BOARD, dependencies.BOARD, pipeline.BOARD, explorer.BOARD]
OUT = Path(__file__).resolve().parents[1] / "generated" / "dashboards"


def render() -> dict[Path, str]:
    """{path relative to OUT: JSON text} of every dashboard of every profile."""
    return {Path(profile) / f"{board.slug}.json": common.to_json(common.build(board, profile))
            for profile in common.PROFILES for board in BOARDS}


def generate(out: Path = OUT, check: bool = False) -> list[Path]:
    """Write (or with check=True, only compare) every dashboard; returns the paths that were stale."""
    stale = []
    for rel, text in render().items():
        path = out / rel
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return stale
