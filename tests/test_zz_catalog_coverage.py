"""Runs last (see conftest): compares what the whole test session saw the
sidecar emit with the catalog, in both directions."""
from pathlib import Path

import pytest

from otel_mta import catalog
from tests import emitted

ALL_TEST_FILES = {str(p) for p in Path(__file__).parent.glob("**/test_*.py")} | {
    str(p) for p in Path(__file__).parent.glob("**/*_test.py")}


def _whole_suite() -> bool:
    return ALL_TEST_FILES <= emitted.COLLECTED_MODULES


def test_everything_emitted_is_in_the_catalog():
    c = catalog.load()
    assert emitted.METRIC_NAMES, "no metrics were seen"
    unknown = emitted.METRIC_NAMES - set(c.metrics)
    assert not unknown, f"emitted but not in the catalog: {sorted(unknown)}"
    for name, keys in emitted.METRIC_ATTRIBUTES.items():
        declared = set(c.metrics[name].attributes) | {"otel.metric.overflow"}
        assert keys <= declared, f"{name}: undeclared attributes {sorted(keys - declared)}"
    prefixes = tuple(getattr(c, "passthrough_prefixes", ()))
    for kind, keys in (("log", emitted.LOG_ATTRIBUTES), ("span", emitted.SPAN_ATTRIBUTES)):
        undeclared = {k for k in keys if k not in c.attributes and not (prefixes and k.startswith(prefixes))}
        assert not undeclared, f"{kind} attributes not in the catalog: {sorted(undeclared)}"


def test_every_catalog_metric_was_emitted_by_the_tests():
    if not _whole_suite():
        pytest.skip("only meaningful when the whole suite runs (make test)")
    never = set(catalog.load().metrics) - emitted.METRIC_NAMES
    assert not never, f"in the catalog but never emitted by any test: {sorted(never)}"
