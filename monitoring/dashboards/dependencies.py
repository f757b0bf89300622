"""Dependencies: MongoDB, Redis, the host and the mail stack's processes.

Names are the Collector contrib receivers' (mongodbreceiver, redisreceiver,
hostmetricsreceiver), so these panels also work on their data. Their
resources have no service.name: the Prometheus profile reads the resource
attributes the gateway turns into labels (server_address, host_name,
process_command; collector-config/gateway.yaml).
"""
from __future__ import annotations

from monitoring.dashboards import sql
from monitoring.dashboards.common import SQL, Board, Chart, PromQL, Row, Side
from monitoring.dashboards.settings import settings

T = settings()["thresholds"]
SERVER = "server_address, server_port"
SERVER_LEGEND = "{{server_address}}:{{server_port}}"
SERVER_SQL = "concat(r['server.address'], ':', r['server.port'])"
PROGRAM_RE = ".*?" + sql.PROGRAM_RE + ".*"


def _by_program(expr: str) -> str:
    return f'sum by (host_name, program) (label_replace({expr}, "program", "$1", "process_command", "{PROGRAM_RE}"))'


PROGRAM_BY = {"host": "r['host.name']", "program": sql.program()}


def _process_level(metric: str) -> str:
    return sql.level_series(metric, PROGRAM_BY, kind="sum", where=f"{sql.program('ResourceAttributes')} != ''")


BOARD = Board(
    slug="dependencies", title="otel-mta / Dependencies",
    description="MongoDB, Redis, the host and the processes of zone-mta, wildduck, haraka, mongod and redis-server.",
    rows=[
        Row("MongoDB", [
            Chart("MongoDB operations",
                  "Operations per second per server and type (insert, query, update, delete, getmore, "
                  "command). A drop to zero with mail still flowing means ZoneMTA lost its database; a "
                  "surge of queries or getmores with a growing queue points at a missing index or a "
                  "queue scan (check the slow query log).",
                  "stacked", unit="ops", w=8,
                  prometheus=Side([PromQL(f"sum by ({SERVER}, operation) "
                                          "(rate(mongodb_operation_count_total[$__rate_interval]))",
                                          SERVER_LEGEND + " {{operation}}")]),
                  clickhouse=Side([SQL(sql.counter_rate("mongodb.operation.count",
                                                        {"server": SERVER_SQL, "operation": "a['operation']"}),
                                       "time_series")])),
            Chart("MongoDB connections in use",
                  "Connections open against the server's limit (current / (current + available)). "
                  f"Above {T['mongodb_connections_ratio']:.0%} (monitoring/config.yaml) new clients will "
                  "soon wait or fail: look for a client leaking connections (ZoneMTA and WildDuck "
                  "processes restarted in a loop) or raise net.maxIncomingConnections.",
                  "timeseries", unit="percentunit", w=8, max=1,
                  thresholds=[(T["mongodb_connections_ratio"], "red")],
                  prometheus=Side([PromQL(f'max by ({SERVER}) (mongodb_connection_count{{type="current"}}) / '
                                          f'(max by ({SERVER}) (mongodb_connection_count{{type="current"}}) + '
                                          f'max by ({SERVER}) (mongodb_connection_count{{type="available"}}))',
                                          SERVER_LEGEND)]),
                  clickhouse=Side([SQL(sql.level_series(
                      "mongodb.connection.count", {"server": SERVER_SQL}, kind="sum",
                      value="maxIf(v, a['type'] = 'current') / (maxIf(v, a['type'] = 'current') "
                            "+ maxIf(v, a['type'] = 'available'))"), "time_series")])),
            Chart("MongoDB replication lag",
                  "How far each replica-set member's last applied operation is behind the primary's. "
                  f"Above {T['mongodb_replication_lag_s']} s (the MongodbReplicationLag alert's threshold, monitoring/config.yaml) a failover would lose "
                  "recent queue changes and reads from that member are stale: check its disk and network, "
                  "and the primary's write load.",
                  "timeseries", unit="s", w=8,
                  thresholds=[(T["mongodb_replication_lag_s"], "red")],
                  prometheus=Side([PromQL("max by (mongodb_replset_name, mongodb_replset_member) "
                                          "(mongodb_replset_member_replication_lag_seconds)",
                                          "{{mongodb_replset_name}} {{mongodb_replset_member}}")]),
                  clickhouse=Side([SQL(sql.level_series(
                      "mongodb.replset.member.replication_lag",
                      {"replset": "a['mongodb.replset.name']", "member": "a['mongodb.replset.member']"},
                      agg="max"), "time_series")])),
            Chart("MongoDB replica-set members by state",
                  "Healthy members per state as the polled member sees them (PRIMARY, SECONDARY, ...). "
                  "No PRIMARY means the set lost its primary and ZoneMTA cannot queue or update mail: "
                  "check the members' logs and network partitions; fewer SECONDARY than members means "
                  "one is down or recovering.",
                  "stacked", w=8,
                  prometheus=Side([PromQL("sum by (mongodb_replset_name, mongodb_replset_member_state) "
                                          "(mongodb_replset_member_health_ratio)",
                                          "{{mongodb_replset_name}} {{mongodb_replset_member_state}}")]),
                  clickhouse=Side([SQL(sql.level_series(
                      "mongodb.replset.member.health",
                      {"replset": "a['mongodb.replset.name']", "state": "a['mongodb.replset.member.state']"}),
                      "time_series")])),
            Chart("MongoDB servers up",
                  "1 while the poller's last look at the server succeeded, 0 when it could not reach "
                  "it. At 0, ZoneMTA is very likely failing too: check the server, then the poller's "
                  "error in the Telemetry pipeline dashboard (a wrong URI or credentials).",
                  "timeseries", w=8, max=1,
                  prometheus=Side([PromQL(f"min by ({SERVER}) (mongodb_health_ratio)", SERVER_LEGEND)]),
                  clickhouse=Side([SQL(sql.level_series("mongodb.health", {"server": SERVER_SQL}, agg="min"),
                                       "time_series")])),
            Chart("ZoneMTA's queue collection",
                  "Deliveries in ZoneMTA's queue collection, as the MongoDB poller counts them per zone and "
                  "state. When it disagrees with the Queues dashboard for long, the API poller and the "
                  "database see different ZoneMTAs: check both pollers' targets.",
                  "timeseries", w=8,
                  prometheus=Side([PromQL("sum by (mta_queue_state) (mta_queue_domain_size)",
                                          "{{mta_queue_state}}")]),
                  clickhouse=Side([SQL(sql.level_series("mta.queue.domain.size",
                                                        {"state": "a['mta.queue.state']"}), "time_series")])),
        ]),
        Row("Redis", [
            Chart("Redis memory against maxmemory",
                  "Memory Redis uses and its maxmemory (0: no limit). Near the limit Redis evicts keys "
                  "or refuses writes (by its policy), and ZoneMTA loses locks and counters: raise "
                  "maxmemory or find the keys that grow (redis-cli --bigkeys).",
                  "timeseries", unit="bytes", w=8,
                  prometheus=Side([PromQL(f"max by ({SERVER}) (redis_memory_used_bytes)", SERVER_LEGEND + " used"),
                                   PromQL(f"max by ({SERVER}) (redis_maxmemory_bytes)",
                                          SERVER_LEGEND + " maxmemory")]),
                  clickhouse=Side([SQL(sql.level_series(
                      ("redis.memory.used", "redis.maxmemory"),
                      {"series": f"concat({SERVER_SQL}, if(m = 'redis.maxmemory', ' maxmemory', ' used'))"},
                      agg="max"), "time_series")])),
            Chart("Redis evictions and expirations",
                  "Keys evicted (because of maxmemory) and keys expired, per second. Any eviction means "
                  "Redis ran out of memory and dropped data ZoneMTA or WildDuck may still need: raise "
                  "maxmemory now, then find what grew.",
                  "timeseries", unit="ops", w=8,
                  prometheus=Side([PromQL(f"sum by ({SERVER}) (rate(redis_keys_evicted_total[$__rate_interval]))",
                                          SERVER_LEGEND + " evicted"),
                                   PromQL(f"sum by ({SERVER}) (rate(redis_keys_expired_total[$__rate_interval]))",
                                          SERVER_LEGEND + " expired")]),
                  clickhouse=Side([SQL(sql.counter_rate(
                      "redis.keys.evicted", {"series": f"concat({SERVER_SQL}, ' evicted')"}), "time_series"),
                      SQL(sql.counter_rate(
                          "redis.keys.expired", {"series": f"concat({SERVER_SQL}, ' expired')"}),
                          "time_series")])),
            Chart("Redis clients",
                  "Connected and blocked clients, and connections refused for maxclients per second. "
                  "Refused connections mean maxclients is too low for the ZoneMTA and WildDuck "
                  "processes; blocked clients that stay up mean a stuck consumer.",
                  "timeseries", w=8,
                  prometheus=Side([PromQL(f"max by ({SERVER}) (redis_clients_connected)", SERVER_LEGEND + " connected"),
                                   PromQL(f"max by ({SERVER}) (redis_clients_blocked)", SERVER_LEGEND + " blocked"),
                                   PromQL(f"sum by ({SERVER}) (rate(redis_connections_rejected_total"
                                          "[$__rate_interval]))", SERVER_LEGEND + " refused/s")]),
                  clickhouse=Side([SQL(sql.level_series(
                      ("redis.clients.connected", "redis.clients.blocked"),
                      {"series": f"concat({SERVER_SQL}, ' ', replaceOne(m, 'redis.clients.', ''))"},
                      kind="sum", agg="max"), "time_series")])),
        ]),
        Row("Host and processes", [
            Chart("Host CPU busy",
                  "Share of CPU time not idle, per host. Near 100 % the senders and the database slow "
                  "down together: find the busy program below.",
                  "timeseries", unit="percentunit", w=8, max=1,
                  prometheus=Side([PromQL('1 - sum by (host_name) (rate(system_cpu_time_seconds_total{state="idle"}'
                                          '[$__rate_interval])) / sum by (host_name) '
                                          '(rate(system_cpu_time_seconds_total[$__rate_interval]))',
                                          "{{host_name}}")]),
                  clickhouse=Side([SQL(sql.counter_rate(
                      "system.cpu.time", {"host": "r['host.name']"},
                      value="1 - sumIf(d, a['state'] = 'idle') / sum(d)"), "time_series")])),
            Chart("Host memory",
                  "Memory per host by state (used, cached, buffered, free). Used near the total with "
                  "little cache left means the database and Redis compete for memory: expect swapping "
                  "and slow queries.",
                  "stacked", unit="bytes", w=8,
                  prometheus=Side([PromQL('sum by (host_name, state) '
                                          '(system_memory_usage_bytes{state=~"used|cached|buffered|free"})',
                                          "{{host_name}} {{state}}")]),
                  clickhouse=Side([SQL(sql.level_series(
                      "system.memory.usage", {"host": "r['host.name']", "state": "a['state']"},
                      where="Attributes['state'] IN ('used', 'cached', 'buffered', 'free')", kind="sum"),
                      "time_series")])),
            Chart("Filesystem use",
                  "Used share of each filesystem. A full filesystem stops MongoDB, Redis persistence and "
                  "the sidecar's spool: free space or grow the volume before 90 %.",
                  "timeseries", unit="percentunit", w=8, max=1, thresholds=[(0.9, "red")],
                  prometheus=Side([PromQL('sum by (host_name, mountpoint) (system_filesystem_usage_bytes{state="used"}) '
                                          '/ sum by (host_name, mountpoint) (system_filesystem_usage_bytes)',
                                          "{{host_name}} {{mountpoint}}")]),
                  clickhouse=Side([SQL(sql.level_series(
                      "system.filesystem.usage", {"host": "r['host.name']", "mountpoint": "a['mountpoint']"},
                      kind="sum", value="sumIf(v, a['state'] = 'used') / sum(v)"), "time_series")])),
            Chart("Processes per program",
                  "Running processes of each mail-stack program per host (zone-mta counts its master, "
                  "receiver and sender processes). A program that drops to zero has died: check its "
                  "service manager and logs; a count that keeps changing is a crash loop.",
                  "timeseries", w=6,
                  prometheus=Side([PromQL(f'count by (host_name, program) (label_replace(process_memory_usage_bytes, '
                                          f'"program", "$1", "process_command", "{PROGRAM_RE}"))',
                                          "{{host_name}} {{program}}")]),
                  clickhouse=Side([SQL(sql.level_series(
                      "process.memory.usage", PROGRAM_BY, kind="sum", agg="count",
                      where=f"{sql.program('ResourceAttributes')} != ''"), "time_series")])),
            Chart("CPU per program",
                  "CPU used by each program's processes (1 = one core). A sender using a full core is "
                  "the limit of its zone; mongod or redis-server near their cores' count are the "
                  "bottleneck of everything else.",
                  "timeseries", unit="percentunit", w=6,
                  prometheus=Side([PromQL(_by_program("rate(process_cpu_time_seconds_total[$__rate_interval])"),
                                          "{{host_name}} {{program}}")]),
                  clickhouse=Side([SQL(sql.counter_rate(
                      "process.cpu.time", PROGRAM_BY, where=f"{sql.program('ResourceAttributes')} != ''"),
                      "time_series")])),
            Chart("Memory per program",
                  "Resident memory of each program's processes. Steady growth without a plateau is a "
                  "leak: restart the program at a quiet time and report it; mongod and redis-server grow "
                  "with their data sets.",
                  "timeseries", unit="bytes", w=6,
                  prometheus=Side([PromQL(_by_program("process_memory_usage_bytes"), "{{host_name}} {{program}}")]),
                  clickhouse=Side([SQL(_process_level("process.memory.usage"), "time_series")])),
            Chart("Open files per program",
                  "File descriptors open in each program's processes. Growth towards the process limit "
                  "(ulimit -n) ends in refused connections: look for connections that are never closed.",
                  "timeseries", w=6,
                  prometheus=Side([PromQL(_by_program("process_open_file_descriptors"), "{{host_name}} {{program}}")]),
                  clickhouse=Side([SQL(_process_level("process.open_file_descriptors"), "time_series")])),
        ]),
    ])
