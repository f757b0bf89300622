"""OTLP resources: who produced the telemetry.

ZoneMTA's telemetry describes the ZoneMTA instance the sidecar serves; the
sidecar's own telemetry describes the sidecar (`service.name` otel-mta, or
OTEL_SERVICE_NAME). Kubernetes attributes come from the downward-API variables
the Helm chart sets (K8S_POD_NAME, K8S_NAMESPACE_NAME, K8S_NODE_NAME, K8S_POD_UID).
"""
from __future__ import annotations

import os
import socket

from otel_mta import __version__
from otel_mta.signals import wire

_K8S_ENV = {
    "k8s.pod.name": "K8S_POD_NAME",
    "k8s.namespace.name": "K8S_NAMESPACE_NAME",
    "k8s.node.name": "K8S_NODE_NAME",
    "k8s.pod.uid": "K8S_POD_UID",
}


class Resource:
    """An immutable resource with its OTLP encoding computed once.

    Made only by Resources, which keeps one object per set of attributes, so a
    resource is its own identity: it is hashed for every batch and metric
    point, and identity hashing is done in C (a value hash took a Python call).
    """

    __slots__ = ("attrs", "encoded", "key")

    def __init__(self, attrs: dict):
        self.attrs = {k: v for k, v in attrs.items() if v is not None and v != ""}
        self.encoded = wire.resource(self.attrs)
        self.key = tuple(sorted(self.attrs.items(), key=lambda kv: kv[0]))

    @property
    def service(self) -> str:
        return self.attrs.get("service.name", "")

    def __repr__(self) -> str:
        return f"Resource({self.attrs})"


class Resources:
    """Builds and interns the resources the sidecar stamps on its output."""

    def __init__(self, extra: dict | None = None, self_service: str = "otel-mta",
                 zonemta_service: str = "zonemta", instance_id: str | None = None,
                 environ=os.environ):
        hostname = socket.gethostname()
        base = {k: environ.get(v) for k, v in _K8S_ENV.items()}
        base["host.name"] = environ.get("K8S_NODE_NAME") or hostname
        extra = dict(extra or {})
        extra.pop("service.name", None)  # OTEL_SERVICE_NAME semantics: names the sidecar
        self._extra = extra
        self._node = {"host.name": base["host.name"], "k8s.node.name": base["k8s.node.name"]}
        self._base = {**base, **extra}
        self._instance = instance_id or environ.get("K8S_POD_NAME") or hostname
        self._cache: dict = {}
        self.own = self._intern({**self._base, "service.name": self_service,
                                 "service.version": __version__,
                                 "service.instance.id": self._instance})
        self.zonemta = self.producer(zonemta_service)

    def _intern(self, attrs: dict) -> Resource:
        res = Resource(attrs)
        return self._cache.setdefault(res.key, res)

    def producer(self, service: str, host: str | None = None) -> Resource:
        """The resource of a producer the sidecar speaks for (ZoneMTA, WildDuck, ...).

        Without `host`, the producer is the one beside this sidecar (same pod or
        node); with it (GELF's `host`), that host.
        """
        key = (service, host)
        res = self._cache.get(key)
        if res is None:
            attrs = {**self._base, "service.name": service, "service.instance.id": self._instance}
            if host:
                attrs["host.name"] = host
                attrs["service.instance.id"] = host
            res = self._cache[key] = self._intern(attrs)
        return res

    def target(self, attrs: dict, where: str = "remote") -> Resource:
        """The resource of something a poller observes, named by `attrs` the way
        the Collector's receivers name it (no service.name).

        `where` says what else is known to describe it: "remote" (a Redis or
        MongoDB server somewhere: only OTEL_RESOURCE_ATTRIBUTES), "node" (the
        host the sidecar runs on: host.name, k8s.node.name) or "pod" (a process
        beside the sidecar: also the pod's k8s.* attributes).
        """
        if where == "pod":    # processes come and go: not kept in the cache
            return Resource({**self._base, **attrs})
        base = {**self._node, **self._extra} if where == "node" else self._extra
        key = ("target", where, tuple(sorted(attrs.items())))
        res = self._cache.get(key)
        if res is None:
            res = self._cache[key] = self._intern({**base, **attrs})
        return res
