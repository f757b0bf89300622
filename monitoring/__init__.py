"""Dashboards and rules generated from code (`python -m monitoring`)."""
