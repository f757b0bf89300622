"""loadbalancer.yaml sends all spans of a trace to the same gateway replica.

Two Collectors running local.yaml stand in for gateway replicas; the
load-balancing tier runs the shipped loadbalancer.yaml with a static resolver
naming them (instead of the DNS lookup of a headless Service).
"""
from __future__ import annotations

from collections import defaultdict

from telemetry import attempt_span, root_span, send_spans, spans_in, trace_id


def test_traces_stick_to_one_backend_and_spread_over_both(otelcol):
    b1, b2 = otelcol(["local.yaml"]), otelcol(["local.yaml"])
    lb = otelcol(["loadbalancer.yaml", "loadbalancer-static.yaml"],
                 env={"LB_BACKEND_1": b1.grpc_endpoint, "LB_BACKEND_2": b2.grpc_endpoint})
    tids = [trace_id(f"mid:{i}@lb.test") for i in range(40)]
    # Each trace arrives in two separate requests, as root and attempts do.
    send_spans(lb, [attempt_span(t, f"q{i}", "deferred", defcount=1) for i, t in enumerate(tids)])
    send_spans(lb, [root_span(t, f"q{i}") for i, t in enumerate(tids)])

    def spans_by_backend(_):
        got = {name: spans_in(b.records("traces")) for name, b in (("b1", b1), ("b2", b2))}
        return got if sum(len(v) for v in got.values()) >= 80 else None

    got = lb.wait_for(spans_by_backend, timeout=30, what="80 spans at the backends")
    where = defaultdict(set)
    for name, spans in got.items():
        for s in spans:
            where[s["traceId"]].add(name)
    assert len(where) == 40
    assert all(len(backends) == 1 for backends in where.values()), "a trace was split across replicas"
    per_backend = {name: sum(1 for b in where.values() if name in b) for name in ("b1", "b2")}
    assert min(per_backend.values()) >= 5, per_backend
