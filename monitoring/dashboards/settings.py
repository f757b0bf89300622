"""monitoring/config.yaml's `dashboards:` section, with its defaults."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"
DEFAULTS = {"top_n": 10, "thresholds": {"queue_active_behind_s": 300, "queue_deferred_age_s": 86400,
                                         "delivery_p95_s": 10, "mongodb_connections_ratio": 0.8,
                                         "mongodb_replication_lag_s": 10}}


@lru_cache(maxsize=1)
def settings() -> dict:
    doc = yaml.safe_load(CONFIG.read_text()) if CONFIG.exists() else {}
    own = (doc or {}).get("dashboards") or {}
    unknown = set(own) - set(DEFAULTS) | set(own.get("thresholds") or {}) - set(DEFAULTS["thresholds"])
    if unknown:
        raise ValueError(f"{CONFIG}: unknown dashboards keys {sorted(unknown)}")
    return {**DEFAULTS, **own, "thresholds": {**DEFAULTS["thresholds"], **(own.get("thresholds") or {})}}
