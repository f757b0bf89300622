"""Loads the metric catalog (otel_mta/catalog/*.yaml): the single source of truth
for every metric name, type, unit and attribute the sidecar emits."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import yaml

CATALOG_DIR = Path(__file__).with_name("catalog")
TYPES = {"counter", "updowncounter", "gauge", "histogram"}


@dataclass(frozen=True)
class MetricDef:
    name: str
    type: str
    unit: str
    description: str
    attributes: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    resource: str = ""
    area: str = ""


@dataclass(frozen=True)
class AttributeDef:
    name: str
    type: str
    description: str
    signals: tuple[str, ...]
    free_text: bool = False   # text that can be large: capped at limits.free_text_length


@dataclass(frozen=True)
class Catalog:
    metrics: dict
    attributes: dict
    # log attribute key prefixes for fields passed through by name (GELF `_foo` -> gelf.foo)
    passthrough_prefixes: tuple = ()

    def free_text_keys(self) -> frozenset:
        """Attributes whose values are free text (`free_text: true`); values of
        passed-through fields (passthrough_prefixes) are free text too."""
        return frozenset(a.name for a in self.attributes.values() if a.free_text)

    def metric(self, name: str) -> MetricDef:
        try:
            return self.metrics[name]
        except KeyError:
            raise KeyError(f"metric {name!r} is not in the catalog (otel_mta/catalog/)") from None


@functools.cache
def load(directory: Path = CATALOG_DIR) -> Catalog:
    metrics: dict[str, MetricDef] = {}
    attributes: dict[str, AttributeDef] = {}
    prefixes: list[str] = []
    for path in sorted(directory.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        for name, spec in (doc.get("metrics") or {}).items():
            if name in metrics:
                raise ValueError(f"{path.name}: metric {name} declared twice")
            if spec["type"] not in TYPES:
                raise ValueError(f"{path.name}: metric {name}: type {spec['type']!r} not in {sorted(TYPES)}")
            if spec["type"] == "histogram" and not spec.get("buckets"):
                raise ValueError(f"{path.name}: histogram {name} needs buckets")
            metrics[name] = MetricDef(
                name=name, type=spec["type"], unit=str(spec["unit"]),
                description=spec["description"].strip(),
                attributes=tuple(spec.get("attributes") or ()),
                buckets=tuple(float(b) for b in spec.get("buckets") or ()),
                resource=spec.get("resource", ""), area=path.stem)
        prefixes.extend(str(p) for p in doc.get("passthrough_prefixes") or ())
        for name, spec in (doc.get("attributes") or {}).items():
            if name in attributes:
                raise ValueError(f"{path.name}: attribute {name} declared twice")
            attributes[name] = AttributeDef(
                name=name, type=spec["type"], description=spec["description"].strip(),
                signals=tuple(spec.get("signals") or ()), free_text=bool(spec.get("free_text")))
    for m in metrics.values():
        for a in m.attributes:
            if a not in attributes:
                raise ValueError(f"metric {m.name}: attribute {a} is not declared under attributes:")
    return Catalog(metrics, attributes, tuple(dict.fromkeys(prefixes)))
