"""otel-mta: OpenTelemetry for a self-hosted mail stack."""
__version__ = "0.1.0"
