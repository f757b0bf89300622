#!/usr/bin/env python3
"""The sidecar behind a receiver's 1 MiB limit, with default settings:
remote-log entries at --rate per second into `otel-mta run`, exported to

  http       OTLP/HTTP through nginx with `client_max_body_size 1m` (413 beyond)
  grpc       OTLP/gRPC to a grpcio server with max_receive_message_length 1 MiB
  collector  OTLP/gRPC to the real Collector (collector-config/build.sh) with
             `max_recv_msg_size_mib: 1`, which forwards to the counting sink
  unlimited  OTLP/gRPC to a server without a limit (for comparison)

Then --late entries more; prints, per scenario: entries sent, log records
received, lost, how long after they were sent the late entries had all
arrived, what the sidecar reported lost, its size splits, and its exit code.
--max-request-size 3MiB shows the split-on-refusal path alone (the cap of
earlier versions).

    python bench/receiver_limits.py [--rate 10000] [--entries 20000] [--scenarios http,grpc,collector]
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools"), str(ROOT / "bench")]
from harness import free_port  # noqa: E402
from otlp_sink import Sink  # noqa: E402
from remote_log import send, workload  # noqa: E402

COLLECTOR_CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{port}", max_recv_msg_size_mib: 1}}
exporters:
  otlp:
    endpoint: "127.0.0.1:{sink}"
    tls: {{insecure: true}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    logs: {{receivers: [otlp], exporters: [otlp]}}
    traces: {{receivers: [otlp], exporters: [otlp]}}
    metrics: {{receivers: [otlp], exporters: [otlp]}}
"""


def wait_ready(health: int, proc: subprocess.Popen) -> None:
    for _ in range(400):
        if proc.poll() is not None:
            raise SystemExit(f"the sidecar exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{health}/readyz", timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the sidecar did not get ready")


def receiver(name: str, work: Path):
    """(sink, endpoint, protocol, things to stop)"""
    sink_port = free_port()
    if name == "http":
        from tests.stack.nginx import NginxProxy
        sink = Sink(sink_port, http=True)
        proxy = NginxProxy(work / "nginx", sink_port, "1m")
        return sink, proxy.endpoint, "http/protobuf", [proxy.stop]
    if name in ("grpc", "unlimited"):
        sink = Sink(sink_port, max_receive=1 << 20 if name == "grpc" else 256 << 20)
        return sink, f"http://127.0.0.1:{sink_port}", "grpc", []
    from tests.collector.otelcol_harness import build_collector
    from tests.stack.proc import port_open
    sink = Sink(sink_port)
    port = free_port()
    config = work / "collector.yaml"
    config.write_text(COLLECTOR_CONFIG.format(port=port, sink=sink_port))
    log = open(work / "collector.log", "wb")
    col = subprocess.Popen([str(build_collector()), f"--config={config}"], stdout=log, stderr=subprocess.STDOUT)
    for _ in range(200):
        if port_open(port):
            break
        time.sleep(0.1)

    def stop():
        col.terminate()
        col.wait(20)
        log.close()
    return sink, f"http://127.0.0.1:{port}", "grpc", [stop]


def scenario(name: str, datagrams: list, late: list, rate: float, extra_env: dict) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"otel-mta-limits-{name}-"))
    sink, endpoint, protocol, stops = receiver(name, work)
    udp, health = free_port(socket.SOCK_DGRAM), free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
           "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
           "OTEL_MTA_REMOTE_LOG_ENDPOINT": f"127.0.0.1:{udp}", "OTEL_MTA_HEALTH_ENDPOINT": f"127.0.0.1:{health}",
           "OTEL_MTA_GELF_ENDPOINT": "off", "OTEL_MTA_EVENTS_ENDPOINT": "off", "OTEL_MTA_ZONEMTA_API_URL": "off",
           "OTEL_MTA_DATA_DIR": str(work / "data"), **extra_env}
    log_path = work / "sidecar.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "otel_mta", "run"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, cwd=work)
    try:
        wait_ready(health, proc)
        n = len(datagrams)
        send(datagrams, udp, rate)
        deadline = time.time() + 60
        while sink.logs < n and time.time() < deadline:
            time.sleep(0.2)
        before_late = sink.logs
        sent_at = time.time()
        send(late, udp, rate)
        while sink.logs < before_late + len(late) and time.time() < sent_at + 30:
            time.sleep(0.05)
        late_s = time.time() - sent_at if sink.logs >= before_late + len(late) else float("inf")
        proc.terminate()
        code = proc.wait(30)
        time.sleep(0.5)
        got = sink.logs
    finally:
        if proc.poll() is None:
            proc.kill()
        for stop in stops:
            stop()
        sink.close()
    out = log_path.read_text(errors="replace")
    lost = re.search(r"; (\d+) items lost \(([^)]*)\)", out)
    return {"scenario": name, "sent": n + len(late), "received": got, "late_s": late_s, "exit": code,
            "reported_lost": f"{lost.group(1)} ({lost.group(2)})" if lost else "0",
            "size_refusals": out.count("for its size"), "log": log_path}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=10_000, help="entries per second")
    ap.add_argument("--entries", type=int, default=20_000)
    ap.add_argument("--late", type=int, default=100, help="entries sent after the others")
    ap.add_argument("--scenarios", default="http,grpc,collector")
    ap.add_argument("--max-request-size", help="OTEL_MTA_EXPORTER_MAX_REQUEST_SIZE (default: the sidecar's)")
    args = ap.parse_args()
    everything = workload(max(1000, int((args.entries + args.late) / 2.6) + 1))[:args.entries + args.late]
    datagrams, late = everything[:args.entries], everything[args.entries:]
    extra = {"OTEL_MTA_EXPORTER_MAX_REQUEST_SIZE": args.max_request_size} if args.max_request_size else {}
    cap = args.max_request_size or "default"
    print(f"{args.entries:,} remote-log entries at {args.rate:,.0f}/s, then {args.late} more; request cap {cap}")
    print(f"{'receiver (1 MiB limit)':<24} {'sent':>7} {'received':>9} {'lost':>6} {'late arrived':>13} "
          f"{'size warnings':>14} {'sidecar reported lost':>22} {'exit':>5}")
    failed = False
    for name in args.scenarios.split(","):
        r = scenario(name, datagrams, late, args.rate, extra)
        lost = r["sent"] - r["received"]
        failed |= lost != 0 or r["exit"] != 0
        print(f"{name:<24} {r['sent']:>7,} {r['received']:>9,} {lost:>6,} {r['late_s']:>12.2f}s "
              f"{r['size_refusals']:>14} {r['reported_lost']:>22} {r['exit']:>5}", flush=True)
        if lost or r["exit"]:
            print(f"  sidecar log: {r['log']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
