"""The host and the mail stack's processes, read with psutil, as the Collector's
`hostmetricsreceiver` (v0.161.0) names them: its cpu, memory, load,
filesystem, disk and network scrapers' default metrics, and its process
scraper's for every process whose name or command matches one of
`sources.host.processes` (zone-mta, wildduck, haraka, mongod, redis-server by
default), plus process.open_file_descriptors and process.threads.

psutil blocks, so each poll runs in a thread of its own; a poll that is still
running when the next one is due is skipped rather than stacked. In a
Kubernetes pod the sidecar sees the pod's processes only with
`shareProcessNamespace: true`; CPU, memory and load are the node's, network
the pod's and filesystems the container's mounts (docs/pollers.md).

Two disk fields psutil lacks (I/Os in progress, weighted I/O time) are read
from /proc/diskstats, and the slab split from /proc/meminfo, as gopsutil does.
"""
from __future__ import annotations

import asyncio
import os
import re
import socket

import psutil

from otel_mta.sources.poller import Points, PollError, Poller, in_daemon_thread

# contrib networkscraper (network_linux.go): every state is reported, zero or not
TCP_STATES = ("CLOSE_WAIT", "CLOSE", "CLOSING", "DELETE", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2",
              "LAST_ACK", "LISTEN", "SYN_SENT", "SYN_RECV", "TIME_WAIT")
MAX_PROCESSES = 200     # matched processes reported per poll


def _meminfo(path: str = "/proc/meminfo") -> dict:
    out = {}
    try:
        with open(path) as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    except OSError:
        pass
    return out


def _diskstats(path: str = "/proc/diskstats") -> dict:
    """{device: (I/Os in progress, weighted ms doing I/O)}"""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                p = line.split()
                if len(p) >= 14:
                    out[p[2]] = (int(p[11]), int(p[13]))
    except (OSError, ValueError):
        pass
    return out


def _mount_mode(opts: str) -> str:
    for opt in opts.split(","):
        if opt in ("rw", "ro"):
            return opt
    return "unknown"


class HostPoller(Poller):
    name = "host"

    def __init__(self, pipeline, settings):
        super().__init__(pipeline, settings, socket.gethostname())
        self.patterns = [re.compile(p, re.IGNORECASE) for p in settings.processes]
        self._busy: asyncio.Future | None = None
        self._boot_ns = int(psutil.boot_time() * 1e9)
        self._summary = ""

    async def collect(self, points: Points) -> None:
        if self._busy is not None and not self._busy.done():
            raise PollError("overrun", "the previous poll is still running")
        self._busy = in_daemon_thread(self._read, name="otel-mta host poll")
        staged, summary = await asyncio.shield(self._busy)
        points.data, points.starts = staged.data, staged.starts
        self._summary = summary

    def _read(self) -> tuple[Points, str]:
        """Everything, in the worker thread; returns staged points."""
        points = Points()
        summary = ""
        if self.settings.system:
            host = self.pipeline.resources.target({}, where="node")
            boot = self._boot_ns
            self._cpu(points, host, boot)
            self._memory(points, host)
            for name, value in zip(("1m", "5m", "15m"), os.getloadavg()):
                points.add(f"system.cpu.load_average.{name}", host, (), value)
            filesystems = self._filesystems(points, host)
            self._disks(points, host, boot)
            self._network(points, host, boot)
            summary = f"{psutil.cpu_count() or 0} CPUs, {filesystems} filesystems; "
        found = self._processes(points)
        shown = {p.pattern: p.pattern.replace("\\b", "") for p in self.patterns}
        procs = ", ".join(f"{shown[p]} ({c})" for p, c in found.items() if c) or "none"
        missing = [shown[p] for p, c in found.items() if not c]
        summary += f"processes: {procs}"
        if missing:
            summary += f"; none matching {', '.join(missing)}"
        return points, summary

    # -- system ----------------------------------------------------------------------
    def _cpu(self, points: Points, host, boot: int) -> None:
        # per logical CPU, as contrib's cpuscraper (attributes cpu, state)
        for cpu, t in enumerate(psutil.cpu_times(percpu=True)):
            for state, value in (("user", t.user), ("system", t.system), ("idle", t.idle),
                                 ("interrupt", getattr(t, "irq", None)), ("nice", getattr(t, "nice", None)),
                                 ("softirq", getattr(t, "softirq", None)), ("steal", getattr(t, "steal", None)),
                                 ("wait", getattr(t, "iowait", None))):
                points.add("system.cpu.time", host, (str(cpu), state),
                           float(value) if value is not None else 0.0, boot)
        points.add("system.cpu.logical.count", host, (), psutil.cpu_count(logical=True), boot)

    def _memory(self, points: Points, host) -> None:
        vm = psutil.virtual_memory()
        info = _meminfo()
        # contrib's default (gate UseLinuxMemAvailable, beta): used = total - available;
        # psutil's cached includes SReclaimable, as gopsutil's does
        for state, value in (("used", vm.total - vm.available), ("free", vm.free),
                             ("buffered", getattr(vm, "buffers", None)), ("cached", getattr(vm, "cached", None)),
                             ("slab_reclaimable", info.get("SReclaimable")),
                             ("slab_unreclaimable", info.get("SUnreclaim"))):
            points.add("system.memory.usage", host, (state,), value)

    def _filesystems(self, points: Points, host) -> int:
        n = 0
        for part in psutil.disk_partitions(all=False):
            try:
                st = os.statvfs(part.mountpoint)
            except OSError:
                continue
            n += 1
            attrs = (part.device, _mount_mode(part.opts), part.mountpoint, part.fstype)
            used = (st.f_blocks - st.f_bfree) * st.f_frsize
            free = st.f_bavail * st.f_frsize
            reserved = st.f_blocks * st.f_frsize - used - free
            for state, value in (("used", used), ("free", free), ("reserved", reserved)):
                points.add("system.filesystem.usage", host, attrs + (state,), value)
            points.add("system.filesystem.inodes.usage", host, attrs + ("used",), st.f_files - st.f_ffree)
            points.add("system.filesystem.inodes.usage", host, attrs + ("free",), st.f_ffree)
        return n

    def _disks(self, points: Points, host, boot: int) -> None:
        extra = _diskstats()
        for dev, d in (psutil.disk_io_counters(perdisk=True) or {}).items():
            for direction, io, ops, merged, ms in (
                    ("read", d.read_bytes, d.read_count, getattr(d, "read_merged_count", None), d.read_time),
                    ("write", d.write_bytes, d.write_count, getattr(d, "write_merged_count", None), d.write_time)):
                points.add("system.disk.io", host, (dev, direction), io, boot)
                points.add("system.disk.operations", host, (dev, direction), ops, boot)
                points.add("system.disk.merged", host, (dev, direction), merged, boot)
                points.add("system.disk.operation_time", host, (dev, direction), ms / 1000.0, boot)
            busy = getattr(d, "busy_time", None)
            points.add("system.disk.io_time", host, (dev,), busy / 1000.0 if busy is not None else None, boot)
            if dev in extra:
                pending, weighted_ms = extra[dev]
                points.add("system.disk.pending_operations", host, (dev,), pending, boot)
                points.add("system.disk.weighted_io_time", host, (dev,), weighted_ms / 1000.0, boot)

    def _network(self, points: Points, host, boot: int) -> None:
        for dev, n in (psutil.net_io_counters(pernic=True) or {}).items():
            for direction, io, packets, errors, dropped in (
                    ("receive", n.bytes_recv, n.packets_recv, n.errin, n.dropin),
                    ("transmit", n.bytes_sent, n.packets_sent, n.errout, n.dropout)):
                points.add("system.network.io", host, (dev, direction), io, boot)
                points.add("system.network.packets", host, (dev, direction), packets, boot)
                points.add("system.network.errors", host, (dev, direction), errors, boot)
                points.add("system.network.dropped", host, (dev, direction), dropped, boot)
        counts = dict.fromkeys(TCP_STATES, 0)
        try:
            for conn in psutil.net_connections(kind="tcp"):
                counts[conn.status] = counts.get(conn.status, 0) + 1
        except (psutil.AccessDenied, OSError):
            return
        for state, count in counts.items():
            points.add("system.network.connections", host, ("tcp", state), count, boot)

    # -- processes ---------------------------------------------------------------------
    def match(self, name: str, cmdline: list) -> str | None:
        """The first pattern matching the process name, its command (argv[0], the
        title ZoneMTA and Redis set) or the command's base name."""
        first = cmdline[0] if cmdline else ""
        candidates = [c for c in (name, first, os.path.basename(first.split(" ")[0])) if c]
        for p in self.patterns:
            if any(p.match(c) for c in candidates):
                return p.pattern
        return None

    def _processes(self, points: Points) -> dict:
        """{pattern: processes reported}"""
        found = {p.pattern: 0 for p in self.patterns}
        me, total = os.getpid(), 0
        for proc in psutil.process_iter(["name", "cmdline"]):
            info = proc.info
            cmdline = info.get("cmdline") or []
            pattern = self.match(info.get("name") or "", cmdline) if proc.pid != me else None
            if pattern is None:
                continue
            if total >= MAX_PROCESSES:
                break
            try:
                self._process(points, proc, info.get("name") or "", cmdline)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue     # ended while we looked
            found[pattern] += 1
            total += 1
        return found

    def _process(self, points: Points, proc: psutil.Process, name: str, cmdline: list) -> None:
        with proc.oneshot():
            try:
                exe = proc.exe()
            except (psutil.AccessDenied, OSError):
                exe = None
            try:
                owner = proc.username()
            except (psutil.AccessDenied, KeyError, OSError):
                owner = None
            # contrib also sets process.command_line; left out: arguments can carry passwords
            res = self.pipeline.resources.target({
                "process.pid": proc.pid, "process.parent_pid": proc.ppid(),
                "process.executable.name": name or None, "process.executable.path": exe or None,
                "process.command": cmdline[0] if cmdline else None, "process.owner": owner}, where="pod")
            start = int(proc.create_time() * 1e9)
            cpu = proc.cpu_times()
            points.add("process.cpu.time", res, ("user",), float(cpu.user), start)
            points.add("process.cpu.time", res, ("system",), float(cpu.system), start)
            points.add("process.cpu.time", res, ("wait",), float(getattr(cpu, "iowait", 0.0) or 0.0), start)
            mem = proc.memory_info()
            points.add("process.memory.usage", res, (), mem.rss, start)
            points.add("process.memory.virtual", res, (), mem.vms, start)
            try:
                io = proc.io_counters()
                points.add("process.disk.io", res, ("read",), io.read_bytes, start)
                points.add("process.disk.io", res, ("write",), io.write_bytes, start)
            except (psutil.AccessDenied, AttributeError, OSError):
                pass     # /proc/<pid>/io needs the same user or CAP_SYS_PTRACE
            try:
                points.add("process.open_file_descriptors", res, (), proc.num_fds(), start)
            except (psutil.AccessDenied, AttributeError, OSError):
                pass
            points.add("process.threads", res, (), proc.num_threads(), start)

    def summary(self) -> str:
        return self._summary

    async def close(self) -> None:
        pass
