"""Configuration: a YAML file, then environment variables (which win), validated
into one Settings object. docs/configuration.md lists every key and variable.
The classes below are checked by settings_base.py (pydantic's syntax, without
pydantic's memory).

A bad value raises ConfigError with one line naming the key (and the variable
it came from), the value and what is expected; the CLI prints it and exits 2.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping
from urllib.parse import unquote, urlsplit

import yaml
from otel_mta.settings_base import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator


class ConfigError(Exception):
    """One line for the operator: key, value, expectation."""


# -- value types --------------------------------------------------------------
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
_SIZES = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def _duration(value: Any) -> float:
    """Seconds, from a number of seconds or '500ms', '15s', '10m', '1h'."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 500ms, 15s or 10m")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*", str(value))
        if not m:
            raise ValueError("expected a duration like 500ms, 15s or 10m")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds < 0:
        raise ValueError("expected a duration >= 0")
    return seconds


def _size(value: Any) -> int:
    """Bytes, from a number or '64MiB', '500kB', ..."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 32MiB")
    if isinstance(value, int):
        n = value
    else:
        m = re.fullmatch(r"\s*(\d+)\s*([kmg]i?b|b)?\s*", str(value), re.I)
        if not m:
            raise ValueError("expected a size in bytes like 32MiB or 500kB")
        n = int(m.group(1)) * _SIZES[(m.group(2) or "").lower()]
    if n < 0:
        raise ValueError("expected a size >= 0")
    return n


_OFF = ("", "off", "false", "disabled", "none")


def _is_off(value: Any) -> bool:
    return value is None or value is False or str(value).strip().lower() in _OFF


def parse_endpoint(value: Any) -> tuple[str, int] | None:
    """'host:port', '[v6]:port' or 'scheme://host:port' -> (host, port); 'off' -> None."""
    if _is_off(value):
        return None
    text = str(value).strip()
    if "://" in text:
        parts = urlsplit(text)
        host, port = parts.hostname, parts.port
    else:
        m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]]*):(\d+)", text)
        if not m:
            raise ValueError("expected host:port (e.g. 0.0.0.0:31239), a URL, or off")
        host = m.group(1) if m.group(1) is not None else m.group(3)
        port = int(m.group(2) or m.group(4))
    if port is None or not 0 <= port <= 65535:
        raise ValueError("expected a port between 0 and 65535")
    return (host or "0.0.0.0", port)


def _off_or_url(value: Any) -> str | None:
    if _is_off(value):
        return None
    text = str(value).strip()
    if "://" not in text:
        raise ValueError("expected a URL (e.g. redis://127.0.0.1:6379) or off")
    return text


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


Duration = Annotated[float, BeforeValidator(_duration)]
Size = Annotated[int, BeforeValidator(_size)]
Endpoint = Annotated[tuple[str, int] | None, BeforeValidator(parse_endpoint)]
OptionalUrl = Annotated[str | None, BeforeValidator(_off_or_url)]
Bool = Annotated[bool, BeforeValidator(_bool)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- sections -------------------------------------------------------------------
class SpoolSettings(_Model):
    enabled: Bool = False
    max_size: Size = 1 << 30


class ExporterSettings(_Model):
    endpoint: str | None = None                  # None: the embedded file sink
    protocol: Literal["grpc", "http/protobuf"] = "grpc"
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = 10.0
    compression: Literal["none", "gzip"] = "none"
    insecure: Bool | None = None
    certificate: str | None = None
    logs_endpoint: str | None = None             # http/protobuf only: full URLs per signal
    traces_endpoint: str | None = None
    metrics_endpoint: str | None = None
    # Bytes per export request (uncompressed). 512 KiB passes the common limits
    # in front of a collector with room to spare: nginx's default
    # client_max_body_size 1m, a Collector with max_recv_msg_size_mib: 1, gRPC
    # servers' default 4 MiB. A receiver that still refuses one gets it in halves.
    max_request_size: Annotated[Size, Field(ge=16 << 10)] = 512 << 10
    queue_size: Size = 32 << 20
    spool: SpoolSettings = SpoolSettings()
    initial_backoff: Duration = 1.0
    max_backoff: Duration = 30.0


class BatchSettings(_Model):
    logs_delay: Duration = 0.5
    spans_delay: Duration = 0.5
    # records per export request. The SDKs' default is 512; a gRPC request costs
    # the sidecar ~0.4 ms of CPU whatever its size, so 2,048 halves the export's
    # share of each entry (bench/grpc_batch.py). Requests also stop at
    # exporter.max_request_size.
    max_batch: Annotated[int, Field(ge=1, le=100_000)] = 2048


class MetricsSettings(_Model):
    interval: Annotated[Duration, Field(gt=0)] = 60.0
    max_series: Annotated[int, Field(ge=10)] = 2000
    top_n: Annotated[int, Field(ge=1)] = 100


class RemoteLogSettings(_Model):
    endpoint: Endpoint = ("0.0.0.0", 31239)
    receive_buffer: Size = 4 << 20     # UDP socket buffer (kernel caps it at rmem_max)
    queue_size: Size = 16 << 20        # datagrams read but not yet mapped (sources/udp.py); 0: no reading thread


class GelfSettings(_Model):
    """GELF server (docs/gelf.md). Limits follow Graylog's inputs where it has one."""
    endpoint: Endpoint = ("0.0.0.0", 12201)              # UDP and TCP on the same port
    http_endpoint: Endpoint = None                        # GELF over HTTP (POST /gelf), off by default
    receive_buffer: Size = 4 << 20                        # UDP socket buffer (kernel caps it at rmem_max)
    queue_size: Size = 16 << 20                           # UDP datagrams read but not yet mapped (sources/udp.py)
    max_message_size: Size = 1 << 20                      # decompressed / TCP frame / HTTP body cap
    max_fields: Annotated[int, Field(ge=8)] = 256         # fields per message
    max_depth: Annotated[int, Field(ge=1)] = 8            # nesting of object/array field values
    chunk_timeout: Annotated[Duration, Field(gt=0)] = 5.0  # Graylog's: all chunks within 5 s
    max_chunk_sets: Annotated[int, Field(ge=1)] = 1000    # incomplete chunked messages held
    max_chunk_bytes: Size = 32 << 20                      # bytes of chunks held
    tcp_max_connections: Annotated[int, Field(ge=1)] = 256
    tcp_idle_timeout: Annotated[Duration, Field(gt=0)] = 300.0
    max_hosts: Annotated[int, Field(ge=1)] = 1000         # distinct (service, host) resources
    # `_component` / `facility` value -> producer (zonemta | wildduck | haraka | any service name)
    producers: dict[str, str] = Field(default_factory=lambda: {
        "mta": "zonemta", "zonemta": "zonemta", "zone-mta": "zonemta",
        "wildduck": "wildduck", "haraka": "haraka"})


class EventsSettings(_Model):
    """The plugin's events endpoint (docs/events.md)."""
    endpoint: Endpoint = ("0.0.0.0", 9477)
    api_key: Annotated[str | None, BeforeValidator(lambda v: v if v is None or str(v).strip() else None)] = None
    max_body: Annotated[Size, Field(ge=1024)] = 8 << 20     # request body, compressed and decompressed
    max_events: Annotated[int, Field(ge=1, le=10_000)] = 10_000  # per batch (the schema's maxItems)
    dedup_window: Annotated[int, Field(ge=0)] = 100_000     # event ids remembered to drop retried ones (~90 B each)
    read_timeout: Annotated[Duration, Field(gt=0)] = 30.0   # to receive a whole request body


class PollerSettings(_Model):
    """Every poller: how often, how long one poll may take, and how far to back
    off while its target keeps failing (docs/pollers.md)."""
    url: OptionalUrl = None
    interval: Annotated[Duration, Field(gt=0)] = 15.0
    timeout: Annotated[Duration, Field(gt=0)] = 5.0
    max_backoff: Annotated[Duration, Field(gt=0)] = 120.0


class ZoneMTAApiSettings(PollerSettings):
    url: OptionalUrl = "http://127.0.0.1:12080"
    max_zones: Annotated[int, Field(ge=1)] = 100


ReadPreference = Literal["primary", "primaryPreferred", "secondary", "secondaryPreferred", "nearest"]


class MongoClientSettings(PollerSettings):
    """A poller of MongoDB. TLS and authentication go in the URI
    (mongodb://user:pass@host/?tls=true&tlsCAFile=...)."""
    read_preference: ReadPreference = "secondaryPreferred"
    connect_timeout: Annotated[Duration, Field(gt=0)] = 5.0
    server_selection_timeout: Annotated[Duration, Field(gt=0)] = 5.0


class MongoDBSettings(MongoClientSettings):
    interval: Annotated[Duration, Field(gt=0)] = 30.0
    queue_database: str | None = None        # ZoneMTA's dbs.sender; default: the URI's database, else zone-mta
    queue_collection: str = "zone-queue"     # ZoneMTA's queue.collection
    max_zones: Annotated[int, Field(ge=1)] = 100
    max_domains: Annotated[int, Field(ge=0)] = 20   # top destination domains per zone and state; 0: none
    max_databases: Annotated[int, Field(ge=1)] = 100
    max_collections: Annotated[int, Field(ge=1)] = 500


class WildDuckMetricsSettings(PollerSettings):
    """WildDuck's Prometheus page, e.g. http://127.0.0.1:8081/metrics (docs/wildduck.md)."""


class WildDuckUsersSettings(MongoClientSettings):
    """WildDuck's users collection: user count and storage in use (docs/wildduck.md)."""
    interval: Annotated[Duration, Field(gt=0)] = 900.0    # the storage sum reads every account
    timeout: Annotated[Duration, Field(gt=0)] = 30.0
    database: str | None = None        # WildDuck's dbs.users; default: the URI's database, else wildduck
    max_users: Annotated[int, Field(ge=0)] = 200_000      # above it the storage sum is skipped


class RedisSettings(PollerSettings):
    """TLS and authentication go in the URL (rediss://user:pass@host:6380/0?ssl_ca_certs=...)."""


def _patterns(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [p.strip() for p in value.split(",")]
    if not isinstance(value, (list, tuple)):
        raise ValueError("expected a list of regular expressions")
    out = []
    for p in value:
        try:
            re.compile(str(p))
        except re.error as err:
            raise ValueError(f"{p!r} is not a regular expression: {err}") from None
        if str(p):
            out.append(str(p))
    return out


class HostSettings(_Model):
    """Host metrics (hostmetricsreceiver names) and the processes matching `processes`."""
    enabled: Bool = True
    system: Bool = True     # system.* too; off: the processes only (a node-level agent has the rest)
    interval: Annotated[Duration, Field(gt=0)] = 30.0
    timeout: Annotated[Duration, Field(gt=0)] = 10.0
    max_backoff: Annotated[Duration, Field(gt=0)] = 120.0
    # regular expressions matched (case-insensitively, from the start) against
    # the process name, its command (argv[0], e.g. ZoneMTA's title "zone-mta:
    # master process") and that command's base name
    processes: Annotated[list[str], BeforeValidator(_patterns)] = Field(default_factory=lambda: [
        r"zone-mta\b", r"wildduck\b", r"haraka\b", r"mongod\b", r"redis-server\b"])


class SourcesSettings(_Model):
    remote_log: RemoteLogSettings = RemoteLogSettings()
    gelf: GelfSettings = GelfSettings()
    events: EventsSettings = EventsSettings()
    zonemta_api: ZoneMTAApiSettings = ZoneMTAApiSettings()
    mongodb: MongoDBSettings = MongoDBSettings()
    redis: RedisSettings = RedisSettings()
    host: HostSettings = HostSettings()
    wildduck_metrics: WildDuckMetricsSettings = WildDuckMetricsSettings()
    wildduck_users: WildDuckUsersSettings = WildDuckUsersSettings()


Mode = Literal["domain", "hmac", "full", "drop"]
ValueMode = Literal["hmac", "full", "drop"]


class PrivacySettings(_Model):
    recipient: Mode = "domain"
    sender: Mode = "domain"
    subject: ValueMode = "drop"
    user: ValueMode = "drop"
    client: ValueMode = "drop"
    hmac_key: str | None = None

    @model_validator(mode="after")
    def _key_for_hmac(self):
        modes = (self.recipient, self.sender, self.subject, self.user, self.client)
        if "hmac" in modes and not self.hmac_key:
            raise ValueError("hmac_key (OTEL_MTA_HMAC_KEY) is required when a privacy mode is hmac")
        return self


class CorrelationSettings(_Model):
    index_size: Annotated[int, Field(ge=100)] = 50_000
    hold: Duration = 2.0
    root_hold: Duration = 600.0
    max_open_roots: Annotated[int, Field(ge=100)] = 100_000
    max_queued_messages: Annotated[int, Field(ge=100)] = 100_000


Length = Annotated[int | None, Field(ge=0)]


class LimitsSettings(_Model):
    """Attribute value length limits, in characters (docs/configuration.md).

    The first three are OpenTelemetry's (OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT and
    the per-signal ones, which win for their signal): no limit by default, as
    in the SDKs. `free_text_length` caps the fields the catalog marks as free
    text (SMTP replies, error texts, stack traces, GELF's full_message and
    passed-through fields, ...): they can be large, and one record must stay
    well below a receiver's request limit.
    """
    attribute_value_length: Length = None
    log_record_attribute_value_length: Length = None
    span_attribute_value_length: Length = None
    free_text_length: Annotated[Length, BeforeValidator(lambda v: None if _is_off(v) else v)] = 4096

    def for_logs(self) -> int | None:
        v = self.log_record_attribute_value_length
        return v if v is not None else self.attribute_value_length

    def for_spans(self) -> int | None:
        v = self.span_attribute_value_length
        return v if v is not None else self.attribute_value_length


class ResourceSettings(_Model):
    zonemta_service_name: str = "zonemta"
    service_name: str = "otel-mta"
    instance_id: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict)


class HealthSettings(_Model):
    endpoint: Endpoint = ("0.0.0.0", 9478)


class FileSinkSettings(_Model):
    max_size: Size = 100 << 20
    backups: Annotated[int, Field(ge=0)] = 5


class Settings(_Model):
    exporter: ExporterSettings = ExporterSettings()
    batch: BatchSettings = BatchSettings()
    metrics: MetricsSettings = MetricsSettings()
    sources: SourcesSettings = SourcesSettings()
    privacy: PrivacySettings = PrivacySettings()
    correlation: CorrelationSettings = CorrelationSettings()
    limits: LimitsSettings = LimitsSettings()
    resource: ResourceSettings = ResourceSettings()
    health: HealthSettings = HealthSettings()
    file_sink: FileSinkSettings = FileSinkSettings()
    data_dir: Path = Path("otel-mta-data")
    log_level: Literal["debug", "info", "warning", "error"] = "info"


# -- environment ---------------------------------------------------------------
def _ms(value: str) -> float:
    """OTEL_* durations are integer milliseconds."""
    try:
        return int(value.strip()) / 1000.0
    except ValueError:
        raise ValueError("expected an integer number of milliseconds") from None


def _limit(value: str) -> int | None:
    """OTEL_*_LIMIT: a non-negative integer; empty means unset (no limit)."""
    value = value.strip()
    if not value:
        return None
    if not value.isdecimal():
        raise ValueError("expected a number of characters (an integer >= 0)")
    return int(value)


def _limit_or_off(value: str) -> int | None:
    if value.strip().lower() in _OFF[1:]:
        return None
    if not value.strip():
        raise ValueError("expected a number of characters (an integer >= 0) or off")
    return _limit(value)


def _kv_list(value: str) -> dict:
    """W3C-baggage-like 'k1=v1,k2=v2' (OTEL_EXPORTER_OTLP_HEADERS, OTEL_RESOURCE_ATTRIBUTES)."""
    out = {}
    for item in value.split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise ValueError("expected key=value pairs separated by commas")
        key, _, val = item.partition("=")
        out[unquote(key.strip())] = unquote(val.strip())
    return out


# variable -> (path in the YAML tree, conversion of the raw string)
ENV: dict[str, tuple[tuple[str, ...], Any]] = {
    "OTEL_EXPORTER_OTLP_ENDPOINT": (("exporter", "endpoint"), str),
    "OTEL_EXPORTER_OTLP_PROTOCOL": (("exporter", "protocol"), str),
    "OTEL_EXPORTER_OTLP_HEADERS": (("exporter", "headers"), _kv_list),
    "OTEL_EXPORTER_OTLP_TIMEOUT": (("exporter", "timeout"), _ms),
    "OTEL_EXPORTER_OTLP_COMPRESSION": (("exporter", "compression"), str),
    "OTEL_EXPORTER_OTLP_INSECURE": (("exporter", "insecure"), str),
    "OTEL_EXPORTER_OTLP_CERTIFICATE": (("exporter", "certificate"), str),
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": (("exporter", "logs_endpoint"), str),
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": (("exporter", "traces_endpoint"), str),
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": (("exporter", "metrics_endpoint"), str),
    "OTEL_METRIC_EXPORT_INTERVAL": (("metrics", "interval"), _ms),
    "OTEL_BLRP_SCHEDULE_DELAY": (("batch", "logs_delay"), _ms),
    "OTEL_BSP_SCHEDULE_DELAY": (("batch", "spans_delay"), _ms),
    "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": (("batch", "max_batch"), str),
    "OTEL_SERVICE_NAME": (("resource", "service_name"), str),
    "OTEL_RESOURCE_ATTRIBUTES": (("resource", "attributes"), _kv_list),
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": (("limits", "attribute_value_length"), _limit),
    "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT": (("limits", "log_record_attribute_value_length"), _limit),
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": (("limits", "span_attribute_value_length"), _limit),
    "OTEL_MTA_FREE_TEXT_LENGTH_LIMIT": (("limits", "free_text_length"), _limit_or_off),
    "OTEL_MTA_REMOTE_LOG_ENDPOINT": (("sources", "remote_log", "endpoint"), str),
    "OTEL_MTA_GELF_ENDPOINT": (("sources", "gelf", "endpoint"), str),
    "OTEL_MTA_GELF_HTTP_ENDPOINT": (("sources", "gelf", "http_endpoint"), str),
    "OTEL_MTA_EVENTS_ENDPOINT": (("sources", "events", "endpoint"), str),
    "OTEL_MTA_EVENTS_API_KEY": (("sources", "events", "api_key"), str),
    "OTEL_MTA_ZONEMTA_API_URL": (("sources", "zonemta_api", "url"), str),
    "OTEL_MTA_MONGODB_URI": (("sources", "mongodb", "url"), str),
    "OTEL_MTA_REDIS_URL": (("sources", "redis", "url"), str),
    "OTEL_MTA_WILDDUCK_METRICS_URL": (("sources", "wildduck_metrics", "url"), str),
    "OTEL_MTA_WILDDUCK_MONGODB_URI": (("sources", "wildduck_users", "url"), str),
    "OTEL_MTA_HOST_METRICS": (("sources", "host", "enabled"), str),
    "OTEL_MTA_HOST_PROCESSES": (("sources", "host", "processes"), str),
    "OTEL_MTA_HOST_SYSTEM_METRICS": (("sources", "host", "system"), str),
    "OTEL_MTA_HEALTH_ENDPOINT": (("health", "endpoint"), str),
    "OTEL_MTA_DATA_DIR": (("data_dir",), str),
    "OTEL_MTA_EXPORTER_MAX_REQUEST_SIZE": (("exporter", "max_request_size"), str),
    "OTEL_MTA_SPOOL": (("exporter", "spool", "enabled"), str),
    "OTEL_MTA_SPOOL_MAX_SIZE": (("exporter", "spool", "max_size"), str),
    "OTEL_MTA_HMAC_KEY": (("privacy", "hmac_key"), str),
    "OTEL_MTA_LOG_LEVEL": (("log_level",), lambda v: v.strip().lower()),
}
SECRET_KEYS = {("exporter", "headers"), ("privacy", "hmac_key"), ("sources", "events", "api_key"),
               ("sources", "mongodb", "url"), ("sources", "redis", "url"),
               ("sources", "wildduck_users", "url")}   # URLs may hold passwords


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        node = tree.get(key)
        if not isinstance(node, dict):
            node = tree[key] = {}
        tree = node
    if isinstance(value, dict) and isinstance(tree.get(path[-1]), dict):
        value = {**tree[path[-1]], **value}  # env adds to YAML maps (headers, attributes)
    tree[path[-1]] = value


def load(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    import os
    environ = os.environ if environ is None else environ
    tree: dict = {}
    if path is not None:
        try:
            tree = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config error: {path}: no such file") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"config error: {path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"config error: {path}: expected a mapping of settings at the top level")
    origin: dict[tuple, str] = {}
    for var, (keypath, convert) in ENV.items():
        raw = environ.get(var)
        if raw is None:
            continue
        try:
            value = convert(raw)
        except ValueError as err:
            shown = "***" if keypath in SECRET_KEYS else raw
            raise ConfigError(f"config error: {var}={shown!r}: {err}") from None
        _set(tree, keypath, value)
        origin[keypath] = var
    try:
        return Settings.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_describe(err.errors()[0], origin, path)) from None


def _describe(error: dict, origin: dict, path) -> str:
    loc = tuple(str(p) for p in error["loc"] if not str(p).startswith(("function-", "tuple[", "union[")))
    key = ".".join(loc) or "(top level)"
    src = origin.get(loc)
    if src is None:
        for n in range(len(loc) - 1, 0, -1):
            if loc[:n] in origin:
                src = origin[loc[:n]]
                break
    where = f" (from {src})" if src else (f" (in {path})" if path else "")
    msg = error["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if error["type"] == "extra_forbidden":
        return f"config error: {key}{where}: unknown setting (see docs/configuration.md)"
    if error["type"] == "literal_error":
        msg = "expected " + msg.removeprefix("Input should be ")
    value = error.get("input")
    if loc and (loc[:2] in SECRET_KEYS or loc[:3] in SECRET_KEYS or loc[:1] in SECRET_KEYS):
        value = "***"
    shown = f" = {value!r}" if not isinstance(value, dict) else ""
    return f"config error: {key}{shown}{where}: {msg}"
