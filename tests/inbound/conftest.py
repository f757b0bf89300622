"""Fixtures for the inbound (Haraka) tests: the sidecar with its events endpoint on
(the same as the ZoneMTA plugin's tests use)."""
from tests.events.conftest import events_sidecar  # noqa: F401 (a fixture)
