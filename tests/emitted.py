"""What the test session saw the sidecar emit, for the catalog tests.

Received.add (tests/otlp_receiver.py) records every metric name and every
attribute key here, whichever test produced it.
"""
METRIC_NAMES: set = set()
METRIC_ATTRIBUTES: dict = {}      # metric name -> set of attribute keys
LOG_ATTRIBUTES: set = set()
SPAN_ATTRIBUTES: set = set()
COLLECTED_MODULES: set = set()


def record(signal: str, request) -> None:
    if signal == "metrics":
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    METRIC_NAMES.add(m.name)
                    keys = METRIC_ATTRIBUTES.setdefault(m.name, set())
                    data = getattr(m, m.WhichOneof("data"))
                    for p in data.data_points:
                        keys.update(kv.key for kv in p.attributes)
    elif signal == "logs":
        for rl in request.resource_logs:
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    LOG_ATTRIBUTES.update(kv.key for kv in r.attributes)
    elif signal == "traces":
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    SPAN_ATTRIBUTES.update(kv.key for kv in s.attributes)
