"""SMTP replies reduced to their kind (otel_mta/smtp_reply.py)."""
from __future__ import annotations

import pytest

from otel_mta.smtp_reply import MAX_LEN, normalise


@pytest.mark.parametrize("reply, kind", [
    ("451 4.7.1 Greylisted, try again later", "451 4.7.1 Greylisted, try again later"),
    ("451-4.7.1 Try again in 300 s [mx3.example.net 1706712345 a1b2c3d4e5f6]",
     "451 4.7.1 Try again in 300 s [mx3.example.net <id> <id>]"),
    ("421-4.7.0 [198.51.100.7 15] Our system has detected an unusual rate of unsolicited mail. "
     "d9443c01a7336-2a2f1b7c2e4si123456pff.123 - gsmtp",
     "421 4.7.0 [<ip> 15] Our system has detected an unusual rate of unsolicited mail. <id>-<id>.123 - gsmtp"),
    ("550 5.1.1 <***@gmail.com>: Recipient address rejected", "550 5.1.1 <***@gmail.com>: Recipient address rejected"),
    ("  250\r\n 2.0.0   OK ", "250 2.0.0 OK"),
    (None, ""), ("", ""), (42, ""),
])
def test_per_message_detail_is_replaced(reply, kind):
    assert normalise(reply) == kind


def test_two_replies_of_one_kind_become_one():
    a = "421 4.7.0 Too many connections from 203.0.113.9, session 5f2c9a01b7"
    b = "421 4.7.0 Too many connections from 198.51.100.20, session 77ab1e09c3"
    assert normalise(a) == normalise(b)


def test_long_replies_are_cut():
    assert len(normalise("550 " + "x" * 1000)) == MAX_LEN
