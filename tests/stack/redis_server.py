"""A private Debian redis-server on a free loopback port with a temp dir."""

from __future__ import annotations

from pathlib import Path

from . import paths
from .proc import LOOPBACK, Process, free_port


class RedisServer:
    def __init__(self, workdir: Path):
        self.host = LOOPBACK
        self.port = free_port()
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = Process(
            "redis-server",
            [paths.redis_server_bin(), "--bind", self.host, "--port", self.port,
             "--dir", self.dir, "--save", "", "--appendonly", "no",
             "--protected-mode", "no", "--daemonize", "no"],
            self.dir / "redis.log", cwd=self.dir)
        self.proc.wait_until(self._ping, 15, "PING reply")

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def client(self, db: int = 0):
        import redis
        return redis.Redis(host=self.host, port=self.port, db=db, socket_timeout=5)

    def _ping(self) -> bool:
        with self.client() as c:
            return bool(c.ping())

    def stop(self) -> None:
        self.proc.stop()
