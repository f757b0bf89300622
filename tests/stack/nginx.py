"""A private Debian nginx on a free loopback port: a reverse proxy with the
request-body limit of an ingress (client_max_body_size), in front of an OTLP/HTTP
receiver. nginx answers 413 to a larger body, as an ingress in front of a
Collector does (the ingress-nginx default is 1m)."""

from __future__ import annotations

import shutil
from pathlib import Path

from . import paths
from .proc import LOOPBACK, Process, free_port, port_open


def nginx_bin() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if not path:
        paths.missing("nginx")
    return path


class NginxProxy:
    def __init__(self, workdir: Path, upstream_port: int, client_max_body_size: str = "1m"):
        self.port = free_port()
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nginx.conf"
        temp = "\n".join(f"  {kind}_temp_path {self.dir / kind};"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf.write_text(f"""daemon off;
master_process off;
worker_processes 1;
pid {self.dir / "nginx.pid"};
error_log {self.dir / "error.log"} warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
{temp}
  client_max_body_size {client_max_body_size};
  upstream receiver {{ server {LOOPBACK}:{upstream_port}; keepalive 8; }}
  server {{
    listen {LOOPBACK}:{self.port};
    location / {{
      proxy_pass http://receiver;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
""")
        self.proc = Process("nginx", [nginx_bin(), "-p", self.dir, "-e", self.dir / "error.log", "-c", conf],
                            self.dir / "nginx.out", cwd=self.dir)
        self.proc.wait_until(lambda: port_open(self.port), 15, "listening")

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def stop(self) -> None:
        self.proc.stop()
