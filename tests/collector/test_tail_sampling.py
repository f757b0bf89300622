"""tail-sampling.yaml keeps every troubled message trace and samples plain successes.

Runs the shipped tail_sampling processor (local.yaml + tail-sampling.yaml, traces
to the file exporter) with a 1 s decision wait.
"""
from __future__ import annotations

import time

from telemetry import attempt_span, root_span, send_spans, spans_in, trace_id

CONFIGS = ["local.yaml", "tail-sampling.yaml", "local-tail-sampling.yaml"]


def kept_traces(col) -> set[str]:
    return {s["traceId"] for s in spans_in(col.records("traces"))}


def start(otelcol, success_percent: int):
    return otelcol(CONFIGS, env={"OTELCOL_TAIL_DECISION_WAIT": "1s",
                                 "OTELCOL_TAIL_SUCCESS_PERCENT": str(success_percent)})


def test_troubled_traces_are_kept_and_plain_successes_dropped(otelcol):
    col = start(otelcol, 0)
    t = {name: trace_id("mid:" + name) for name in
         ["delivered", "deferred", "rejected", "redelivered", "partial", "marker"]}
    send_spans(col, [
        root_span(t["delivered"], "q1"), attempt_span(t["delivered"], "q1", "delivered"),
        root_span(t["deferred"], "q2", state="queued"), attempt_span(t["deferred"], "q2", "deferred", defcount=1),
        root_span(t["rejected"], "q3", state="bounced"), attempt_span(t["rejected"], "q3", "rejected"),
        # A delivery after earlier deferrals: the deferrals came in another batch
        # long ago; the final attempt says so through mta.defer.count.
        attempt_span(t["redelivered"], "q4", "deferred", defcount=2),
        root_span(t["partial"], "q5", state="partially_delivered"),
        attempt_span(t["partial"], "q5", "delivered"),
    ])
    want = {f"{t[n]:032x}" for n in ["deferred", "rejected", "redelivered", "partial"]}
    col.wait_for(lambda c: kept_traces(c) >= want, timeout=20, what="kept traces")
    # Give the plain success its decision time too, then make sure it was dropped.
    time.sleep(3)
    got = kept_traces(col)
    assert got == want, "the plain delivered trace must be sampled out at 0 %"

    # Whole traces are kept: both spans of the rejected message.
    rejected = [s for s in spans_in(col.records("traces")) if s["traceId"] == f"{t['rejected']:032x}"]
    assert {s["name"] for s in rejected} == {"message", "delivery rejected"}


def test_late_spans(otelcol):
    col = start(otelcol, 0)
    kept, plain = trace_id("mid:kept"), trace_id("mid:plain")
    send_spans(col, [attempt_span(kept, "k1", "deferred", defcount=1),
                     root_span(plain, "p1"), attempt_span(plain, "p1", "delivered")])
    col.wait_for(lambda c: f"{kept:032x}" in kept_traces(c), what="deferred trace kept")
    time.sleep(3)  # both decisions are made now
    assert f"{plain:032x}" not in kept_traces(col)
    # Other mail goes on meanwhile (the dropped-decision cache holds one id).
    other = trace_id("mid:other")
    send_spans(col, [root_span(other, "o1"), attempt_span(other, "o1", "delivered")])
    time.sleep(3)

    # Hours later: the kept message is delivered (a plain span, kept because its
    # trace was kept) and the "plain" message turns out to have a deferred
    # recipient (kept: dropped decisions are not cached).
    send_spans(col, [attempt_span(kept, "k1", "delivered", seq="001"),
                     attempt_span(plain, "p1", "deferred", seq="002", defcount=1)])
    col.wait_for(lambda c: f"{plain:032x}" in kept_traces(c), what="late deferral kept")
    late_delivered = [s for s in spans_in(col.records("traces"))
                      if s["traceId"] == f"{kept:032x}" and s["name"] == "delivery delivered"]
    assert late_delivered, "late span of a kept trace must be kept"


def test_success_percentage_keeps_plain_successes(otelcol):
    col = start(otelcol, 100)
    tid = trace_id("mid:fine")
    send_spans(col, [root_span(tid, "f1"), attempt_span(tid, "f1", "delivered")])
    col.wait_for(lambda c: f"{tid:032x}" in kept_traces(c), what="plain success kept at 100 %")
