"""monitoring/config.yaml's `dashboards:` section, with its defaults. A panel
that shows a value an alert watches draws that alert's threshold (ALERT_LINES),
so the dashboards and the alerts never disagree."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from monitoring.rules import read_config, seconds

CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"
DEFAULTS = {"top_n": 10, "thresholds": {"mongodb_connections_ratio": 0.8}}
# dashboard threshold -> the alert whose `threshold` it draws (in seconds)
ALERT_LINES = {"queue_active_behind_s": "QueueStuck", "queue_deferred_age_s": "DeferredMailTooOld",
               "delivery_p95_s": "DeliveryLatencyHigh", "mongodb_replication_lag_s": "MongodbReplicationLag"}


@lru_cache(maxsize=1)
def settings() -> dict:
    doc = read_config(CONFIG) if CONFIG.exists() else {}
    own = doc.get("dashboards") or {}
    unknown = set(own) - set(DEFAULTS) | set(own.get("thresholds") or {}) - set(DEFAULTS["thresholds"])
    if unknown:
        raise ValueError(f"{CONFIG}: unknown dashboards keys {sorted(unknown)}")
    alerts = doc.get("alerts") or {}
    from_alerts = {key: seconds(alerts[name]["threshold"]) for key, name in ALERT_LINES.items()}
    return {**DEFAULTS, **own,
            "thresholds": {**DEFAULTS["thresholds"], **(own.get("thresholds") or {}), **from_alerts}}
