"""FerretDB v1 (SQLite backend) as the MongoDB stand-in.

It speaks the MongoDB wire protocol and stores documents in SQLite files in a
temp dir. It lacks replica-set and most monitoring commands; see
test_ferretdb_support.py for what it does and does not answer, and
mongo_mock.py for MongoDB-shaped replies to those.
"""

from __future__ import annotations

from pathlib import Path

from . import paths
from .proc import LOOPBACK, Process, free_port


class FerretDB:
    def __init__(self, workdir: Path, repl_set_name: str | None = None):
        self.host = LOOPBACK
        self.port = free_port()
        self.version = paths.versions()["FERRETDB_VERSION"]
        self.data_dir = Path(workdir) / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            paths.ferretdb_bin(),
            "--handler=sqlite", f"--sqlite-url=file:{self.data_dir}/",
            f"--listen-addr={self.host}:{self.port}",
            f"--state-dir={workdir}",
            "--debug-addr=-",        # no metrics/pprof HTTP listener
            "--telemetry=disable",   # never phone home
            "--log-level=warn",
        ]
        if repl_set_name:
            # hello then reports setName/hosts; replSetGetStatus is still absent.
            argv.append(f"--repl-set-name={repl_set_name}")
        self.proc = Process("ferretdb", argv, Path(workdir) / "ferretdb.log", cwd=workdir)
        self.proc.wait_until(self._ping, 30, "ping reply")

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/"

    def client(self, **kwargs):
        import pymongo
        kwargs.setdefault("serverSelectionTimeoutMS", 5000)
        kwargs.setdefault("socketTimeoutMS", 20000)   # a server that stops answering fails the test, not hangs it
        kwargs.setdefault("directConnection", True)
        return pymongo.MongoClient(self.uri, **kwargs)

    def _ping(self) -> bool:
        with self.client(serverSelectionTimeoutMS=500) as c:
            return c.admin.command("ping").get("ok") == 1

    def stop(self) -> None:
        self.proc.stop()
