"""One module per source. `enabled_sources` builds those the settings turn on."""
from __future__ import annotations


def enabled_sources(settings, pipeline) -> list:
    from otel_mta.sources.gelf import GelfSource
    from otel_mta.sources.remote_log import RemoteLogSource

    s = settings.sources
    sources = []
    if s.remote_log.endpoint:
        sources.append(RemoteLogSource(pipeline, s.remote_log))
    if s.gelf.endpoint:
        sources.append(GelfSource(pipeline, s.gelf))
    return sources


def mail_channels(settings) -> int:
    """How many sources deliver ZoneMTA entries (more than one: de-duplicate)."""
    return sum(1 for on in (settings.sources.remote_log.endpoint,) if on)
