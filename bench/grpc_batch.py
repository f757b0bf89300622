#!/usr/bin/env python3
"""What an OTLP/gRPC export costs the sidecar per entry, by request size.

The pipeline's own requests (real remote-log entries, tools/traffic.py) are
sent with grpc.aio to a receiver in another process; the CPU time of this
process (all threads) is divided by the entries. 512 records is the SDKs'
default batch size (the baseline); the sidecar sends up to 2,048 records and
up to exporter.max_request_size bytes (512 KiB; 3 MiB before it had a setting).

    python bench/grpc_batch.py [--messages 20000]
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools"), str(ROOT / "bench")]
from harness import free_port  # noqa: E402
from remote_log import workload  # noqa: E402
from remote_log_stages import pipeline  # noqa: E402


def requests(datagrams: list[bytes], max_batch: int, max_bytes: int) -> list[tuple[str, bytes]]:
    p, src, payloads = pipeline()
    p.logs.max_batch = p.spans.max_batch = max_batch
    p.logs.max_bytes = p.spans.max_bytes = max_bytes
    for d in datagrams:
        src.handle_datagram(d, None)
    p.flush()
    return payloads


async def cpu_to_send(port: int, payloads: list, repeat: int = 3) -> float:
    import grpc
    from otel_mta.export.senders import GRPC_METHODS
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)])
    calls = {s: channel.unary_unary(m) for s, m in GRPC_METHODS.items()}
    await calls[payloads[0][0]](payloads[0][1], timeout=10)  # connected and warm
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        for signal, payload in payloads:
            await calls[signal](payload, timeout=10)
        best = min(best, time.process_time() - t0)
    await channel.close()
    return best


def main() -> int:
    from otlp_sink import Sink
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20_000)
    args = ap.parse_args()
    datagrams = workload(args.messages)
    port = free_port()
    sink = Sink(port)
    print(f"{len(datagrams):,} entries; CPU of this process per entry to export its logs and spans (best of 3)")
    print(f"{'records, bytes per request':>36} {'requests':>9} {'us/entry':>9} {'KiB/request':>12}")
    for max_batch, max_bytes, note in ((512, 3 << 20, "SDK default"), (2048, 3 << 20, "otel-mta before"),
                                       (2048, 1 << 20, ""), (2048, 512 << 10, "otel-mta"),
                                       (2048, 256 << 10, "")):
        payloads = requests(datagrams, max_batch, max_bytes)
        cpu = asyncio.run(cpu_to_send(port, payloads))
        size = sum(len(p) for _, p in payloads) / len(payloads) / 2**10
        label = f"<= {max_batch}, <= {max_bytes >> 10} KiB" + (f" ({note})" if note else "")
        print(f"{label:>36} {len(payloads):>9} {cpu / len(datagrams) * 1e6:>9.2f} {size:>12.0f}")
    sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
