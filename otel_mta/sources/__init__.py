"""One module per source. `enabled_sources` builds those the settings turn on.

A source's module (and the client library it imports: pymongo, redis,
prometheus_client, aiohttp, psutil) is imported only when that source is on:
what is off costs no memory (bench/footprint.py).
"""
from __future__ import annotations


def enabled_sources(settings, pipeline) -> list:
    s = settings.sources
    sources = []
    if s.remote_log.endpoint:
        from otel_mta.sources.remote_log import RemoteLogSource
        sources.append(RemoteLogSource(pipeline, s.remote_log))
    if s.events.endpoint:
        from otel_mta.sources.events_http import EventsSource
        sources.append(EventsSource(pipeline, s.events))
    if s.gelf.endpoint:
        from otel_mta.sources.gelf import GelfSource
        sources.append(GelfSource(pipeline, s.gelf))
    sources += _pollers(s, pipeline)
    return sources


def _pollers(s, pipeline) -> list:
    """Pollers (sources/poller.py): each on its own interval, timeout and backoff."""
    pollers = []
    if s.zonemta_api.url:
        from otel_mta.sources.zonemta_api import ZoneMTAApiPoller
        pollers.append(ZoneMTAApiPoller(pipeline, s.zonemta_api))
    if s.mongodb.url:   # mta.queue.size has one owner: the API poller when it runs
        from otel_mta.sources.mongodb import MongoDBPoller
        pollers.append(MongoDBPoller(pipeline, s.mongodb, queue_size=not s.zonemta_api.url))
    if s.redis.url:
        from otel_mta.sources.redis import RedisPoller
        pollers.append(RedisPoller(pipeline, s.redis))
    if s.host.enabled:
        from otel_mta.sources.host import HostPoller
        pollers.append(HostPoller(pipeline, s.host))
    # off unless a URL is set; their client libraries load only then
    if s.wildduck_metrics.url:
        from otel_mta.sources.wildduck_metrics import WildDuckMetricsPoller
        pollers.append(WildDuckMetricsPoller(pipeline, s.wildduck_metrics))
    if s.wildduck_users.url:
        from otel_mta.sources.wildduck_users import WildDuckUsersPoller
        pollers.append(WildDuckUsersPoller(pipeline, s.wildduck_users))
    return pollers


def mail_channels(settings) -> int:
    """How many sources deliver ZoneMTA entries (more than one: de-duplicate)."""
    return sum(1 for on in (settings.sources.remote_log.endpoint, settings.sources.events.endpoint) if on)
