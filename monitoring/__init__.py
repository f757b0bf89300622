"""otel-mta's alerts, recording rules and dashboards, generated from config.yaml
(`python -m monitoring`, `make monitoring`)."""
