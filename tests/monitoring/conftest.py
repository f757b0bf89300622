"""The `pipeline_run` fixture: the whole pipeline, once per session, into a real
Prometheus (and OTLP JSON for chdb). See pipeline.py for what runs."""
from __future__ import annotations

import pytest

from tests.events.conftest import ensure_plugin_modules
from tests.monitoring.pipeline import PipelineRun, run_pipeline


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory) -> PipelineRun:
    ensure_plugin_modules()   # the plugin runs inside the real ZoneMTA
    run, to_stop = run_pipeline(tmp_path_factory.mktemp("pipeline-run"))
    yield run
    for thing in reversed(to_stop):
        thing.stop()
