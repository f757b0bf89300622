"""Grafana's ClickHouse datasource (grafana-clickhouse-datasource, v4) for the
grafana-foundation-sdk, which has no model for it: a SQL query in the shape the
plugin saves (editorType "sql", rawSql, format), registered as a dataquery
variant so that dashboards load back into the SDK's models unchanged."""
from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants

PLUGIN_ID = "grafana-clickhouse-datasource"
# the plugin's `format` (sqlds' FormatQueryOption) and the queryType Explore shows
FORMATS = {"time_series": 0, "table": 1, "logs": 2, "traces": 3}
QUERY_TYPES = {0: "timeseries", 1: "table", 2: "logs", 3: "traces"}


class Dataquery(cogvariants.Dataquery):
    def __init__(self, raw_sql: str = "", format_val: int = 1, ref_id: str = "A",
                 datasource: dict | None = None):
        self.raw_sql = raw_sql
        self.format_val = format_val
        self.ref_id = ref_id
        self.datasource = datasource or {"type": PLUGIN_ID, "uid": "${datasource}"}

    def to_json(self) -> dict[str, object]:
        return {"datasource": self.datasource, "editorType": "sql", "format": self.format_val,
                "queryType": QUERY_TYPES[self.format_val], "rawSql": self.raw_sql, "refId": self.ref_id,
                "pluginVersion": "4.0.0"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Dataquery":
        if data.get("editorType") != "sql" or "rawSql" not in data:
            raise ValueError(f"not a ClickHouse SQL query: {data}")
        return cls(data["rawSql"], int(data.get("format", 1)), data.get("refId", "A"), data.get("datasource"))


class Query(cogbuilder.Builder[Dataquery]):
    def __init__(self, raw_sql: str, format_val: int = 1, ref_id: str = "A"):
        self._internal = Dataquery(raw_sql, format_val, ref_id)

    def build(self) -> Dataquery:
        return self._internal


class _Raw(cogvariants.Dataquery):
    def __init__(self, data: dict):
        self.data = data

    def to_json(self) -> dict[str, object]:
        return self.data


class RawQuery(cogbuilder.Builder[_Raw]):
    """A query kept as the JSON a datasource saves (Tempo's TraceQL search here)."""

    def __init__(self, data: dict):
        self._internal = _Raw(data)

    def build(self) -> _Raw:
        return self._internal


def variant_config() -> cogruntime.DataqueryConfig:
    return cogruntime.DataqueryConfig(identifier=PLUGIN_ID, from_json_hook=Dataquery.from_json)
