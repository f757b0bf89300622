"""Realistic ZoneMTA remote-log traffic for demos and benchmarks.

Entries are shaped like the real call sites (mail-drop.js QUEUED, sender.js
ACCEPTED/DEFERRED/REJECTED, ...) and encoded by ZoneMTA's real encoder,
msgpack-js@0.3.0, run with node (tests/fixtures/msgpack_js/encode.js).
"""
from __future__ import annotations

import base64
import json
import random
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENCODER = ROOT / "tests" / "fixtures" / "msgpack_js"
DOMAINS = ["gmail.com", "outlook.com", "yahoo.com", "example.com", "example.net", "web.de", "mail.ru",
           "icloud.com", "gmx.de", "proton.me"] + [f"corp{i}.example" for i in range(40)]
ZONES = ["default", "bulk", "transactional"]
IPS = ["10.0.0.5", "10.0.0.6", "10.0.0.7"]
U = "__undefined__"


def generate(messages: int, seed: int = 1, start_ms: float | None = None) -> list[dict]:
    """Entries for `messages` messages: QUEUED, then one outcome per recipient
    (85 % delivered, 12 % deferred then delivered, 3 % rejected: a healthy
    sender; 8 % rejected would be over the bounce-rate alert's 5 %)."""
    rnd = random.Random(seed)
    now = start_ms or time.time() * 1000
    out = []
    for n in range(messages):
        qid = f"18c{n:015x}"
        mid = f"<{n}.{rnd.getrandbits(40):x}@mail.example.org>"
        rcpts = [f"user{rnd.randrange(10**6)}@{rnd.choice(DOMAINS)}" for _ in range(rnd.choice((1, 1, 1, 2, 3)))]
        size = rnd.randrange(2_000, 400_000)
        out.append({"id": qid, "action": "QUEUED", "message-id": mid, "from": "news@example.org",
                    "to": ",".join(rcpts), "src": "10.1.2.3", "subject": f"Newsletter {n}",
                    "headerFrom": "Example News <news@example.org>", "body": size, "md5": f"{n:012x}",
                    "interface": "feeder", "originhost": "app.example.org", "transhost": "app",
                    "transtype": "ESMTPSA", "user": "newsletter"})
        for i, rcpt in enumerate(rcpts, 1):
            seq = f"{i:03x}"
            dom = rcpt.split("@")[1]
            first_byte = rnd.randrange(40, 600)  # ms from fetching the message to its first byte out
            common = {"id": qid, "seq": seq, "zone": rnd.choice(ZONES), "from": "news@example.org",
                      "returnPath": "news@example.org", "to": rcpt, "mx": f"mx1.{dom}", "host": "192.0.2.10",
                      "ip": rnd.choice(IPS), "size": size + 800, "start": first_byte,
                      "timer": first_byte + rnd.randrange(30, 2000), "messageId": mid, "secure": True, "tls": True, "tlsVersion": "TLSv1.3",
                      "tlsCipher": "TLS_AES_256_GCM_SHA384", "tlsAuthorized": True, "tlsAuthorizationError": U,
                      "protocol": "smtp", "httpUrl": U, "httpResponse": U}
            roll = rnd.random()
            if roll < 0.12:
                out.append({**common, "action": "DEFERRED", "category": "greylist", "defcount": 1,
                            "nextattempt": now + 300000, "response": "451 4.7.1 Greylisted, try again later"})
            if roll < 0.97:
                out.append({**common, "action": "ACCEPTED", "response": f"250 2.0.0 OK {n} - gsmtp"})
            else:
                out.append({**common, "action": "REJECTED", "category": "recipient",
                            "response": f"550 5.1.1 <{rcpt}>: Recipient address rejected"})
    return out


def encode(entries: list[dict]) -> list[bytes]:
    if not (ENCODER / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=ENCODER, check=True)
    lines = "".join(json.dumps(e) + "\n" for e in entries)
    res = subprocess.run(["node", str(ENCODER / "encode.js")], input=lines, capture_output=True, text=True, check=True)
    return [base64.b64decode(x) for x in res.stdout.splitlines()]
