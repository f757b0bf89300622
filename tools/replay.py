#!/usr/bin/env python3
"""Send realistic ZoneMTA remote-log traffic to a sidecar: `make demo`.

    python tools/replay.py [--host 127.0.0.1] [--port 31239] [--messages 200] [--rate 50]
"""
from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from traffic import encode, generate  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=31239)
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--rate", type=float, default=50, help="entries per second")
    args = ap.parse_args()
    datagrams = encode(generate(args.messages))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    print(f"sending {len(datagrams)} remote-log entries for {args.messages} messages to "
          f"udp://{args.host}:{args.port} at {args.rate:g}/s", file=sys.stderr)
    gap = 1.0 / args.rate
    for i, d in enumerate(datagrams, 1):
        sock.sendto(d, (args.host, args.port))
        time.sleep(gap)
        if i % 100 == 0:
            print(f"  {i}/{len(datagrams)}", file=sys.stderr)
    print("done: see ./otel-mta-data/otlp/*.jsonl (or your collector)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
