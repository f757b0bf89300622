"""The metric catalog is the single source of truth: consistent, documented,
and matching what the code can create."""
import re
from pathlib import Path

import pytest

from otel_mta import catalog
from otel_mta.signals.metrics import MetricStore

ROOT = Path(__file__).parent.parent
UCUM = re.compile(r"^(\{[a-z_]+\}|s|ms|us|By|1|%|Cel|Hz|By/s|\{[a-z_]+\}/s)$")


def test_catalog_is_consistent():
    c = catalog.load()
    assert "mta.delivery.attempts" in c.metrics
    for m in c.metrics.values():
        assert UCUM.match(m.unit), f"{m.name}: unit {m.unit!r} is not UCUM as we use it"
        assert m.description.endswith("."), m.name
        assert len(set(m.attributes)) == len(m.attributes), m.name
    d = c.metric("mta.delivery.attempts")
    assert d.type == "counter" and d.attributes[:2] == ("mta.zone", "mta.delivery.outcome")
    assert c.metric("mta.delivery.duration").unit == "s" and c.metric("mta.message.size").unit == "By"


def test_instruments_come_only_from_the_catalog():
    store = MetricStore(catalog.load())
    with pytest.raises(KeyError):
        store.counter("mta.made_up")
    with pytest.raises(TypeError):
        store.histogram("mta.delivery.attempts")


def test_series_limit_folds_into_an_overflow_series():
    from tests.otlp_receiver import REQUEST, attrs
    store = MetricStore(catalog.load(), max_series=10)
    c = store.counter("mta.message.queued")
    for i in range(50):
        c.add(1, _Res(), (f"iface{i}",))
    payload, points = store.collect()
    req = REQUEST["metrics"].FromString(payload)
    dps = req.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points
    assert points == 11
    overflow = [p for p in dps if attrs(p.attributes) == {"otel.metric.overflow": True}]
    assert overflow[0].as_int == 40


class _Res:
    attrs = {"service.name": "x"}
    encoded = b""

    def __hash__(self):
        return 1

    def __eq__(self, other):
        return True


def test_docs_metrics_md_is_generated_from_the_catalog():
    from otel_mta.docs import render_metrics_md
    assert (ROOT / "docs" / "metrics.md").read_text() == render_metrics_md(), "run `make docs`"
