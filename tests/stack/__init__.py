"""End-to-end test stack: real Redis, FerretDB (MongoDB stand-in), ZoneMTA,
an SMTP sink and UDP listeners, as pytest fixtures (see fixtures.py, README.md)."""
