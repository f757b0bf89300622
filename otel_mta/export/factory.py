"""Builds the exporter the settings ask for: OTLP gRPC or HTTP to a collector,
or, with no endpoint configured, the embedded OTLP JSON file sink."""
from __future__ import annotations

from otel_mta.config import Settings
from otel_mta.export.exporter import Exporter
from otel_mta.export.queue import ExportQueue
from otel_mta.export.senders import FileSink, GrpcSender, HttpSender
from otel_mta.export.spool import Spool


def build_sender(settings: Settings):
    e = settings.exporter
    if not e.endpoint:
        return FileSink(settings.data_dir / "otlp", settings.file_sink.max_size, settings.file_sink.backups)
    if e.protocol == "grpc":
        return GrpcSender(e.endpoint, e.headers, e.timeout, e.insecure, e.compression, e.certificate)
    return HttpSender(e.endpoint, e.headers, e.timeout, e.compression,
                      {"logs": e.logs_endpoint, "traces": e.traces_endpoint, "metrics": e.metrics_endpoint},
                      e.certificate)


def build_exporter(settings: Settings) -> Exporter:
    e = settings.exporter
    spool = Spool(settings.data_dir / "spool", e.spool.max_size) if e.spool.enabled and e.endpoint else None
    return Exporter(build_sender(settings), ExportQueue(e.queue_size, spool),
                    e.initial_backoff, e.max_backoff, e.max_request_size)
