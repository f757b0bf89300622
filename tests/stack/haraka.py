"""A real Haraka (npm Haraka 3.3.4, pinned in haraka-plugin/package-lock.json)
with our plugin, the way its docs say to install a plugin: a Haraka folder made
by `haraka -i`, the plugin in that folder's node_modules as
haraka-plugin-otel-mta (a symlink to haraka-plugin/, as `npm install <folder>`
makes), enabled as `otel-mta` in config/plugins, its settings in
config/otel-mta.ini. The test policy plugin of the plugin's own tests
(haraka-plugin/test/fixtures/plugins/test_policy.js) refuses by name.
"""

from __future__ import annotations

import shutil
import smtplib
import subprocess
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

from . import paths
from .proc import LOOPBACK, Process, free_port

POLICY_PLUGINS = paths.REPO / "haraka-plugin" / "test" / "fixtures" / "plugins"


class Haraka:
    """One Haraka server (nodes=0: a single process) listening on `port`.

    `plugins` is config/plugins in order; `config` more files of its config
    folder (name -> text); `events_url` the sidecar's events endpoint for the
    plugin (flushed every 100 ms here).
    """

    def __init__(self, workdir: Path, *, plugins: list[str], config: dict[str, str] | None = None,
                 events_url: str | None = None, env: dict[str, str] | None = None, start_timeout: float = 60):
        self.workdir = Path(workdir)
        self.dir = self.workdir / "haraka"
        package = paths.haraka_dir()
        node = paths.node_bin()
        subprocess.run([str(node), str(package / "bin" / "haraka"), "-i", str(self.dir)], check=True,
                       capture_output=True, timeout=60)
        (self.dir / "node_modules").mkdir(exist_ok=True)
        (self.dir / "node_modules" / "haraka-plugin-otel-mta").symlink_to(paths.REPO / "haraka-plugin")
        for f in POLICY_PLUGINS.iterdir():
            shutil.copy(f, self.dir / "plugins" / f.name)
        self.port = free_port()
        self.host = LOOPBACK
        files = {
            "smtp.ini": f"listen={LOOPBACK}:{self.port}\nnodes=0\n",
            "plugins": "\n".join(plugins) + "\n",
            "me": "mx.haraka.test\n",
            "host_list": "rcpt.test\n",
            "log.ini": "[main]\nlevel=info\n",
        }
        if events_url:
            files["otel-mta.ini"] = f"url={events_url}\n[buffer]\nflush_interval_ms=100\n"
        files.update(config or {})
        for name, text in files.items():
            (self.dir / "config" / name).write_text(text)
        self.version = (package / "package.json").read_text().split('"version": "', 1)[1].split('"', 1)[0]
        self.log_path = self.workdir / "haraka.log"
        self.proc = Process("haraka", [node, package / "bin" / "haraka", "-c", self.dir], self.log_path,
                            cwd=self.workdir, env=env)
        # logged once the socket is bound (a probing connection would be reported by the plugin)
        self.proc.wait_until(lambda: f"Listening on {LOOPBACK}:{self.port}" in self.log_text(), start_timeout,
                             "Listening on")

    def send(self, mail_from: str, rcpt_to: list[str] | str, subject: str = "otel-mta test",
             body: str = "Hello from the otel-mta Haraka test.\n", message_id: str | None = "",
             helo: str = "client.otel-mta.test") -> tuple[str | None, dict, tuple[int, bytes]]:
        """One message over SMTP. Returns (Message-ID or None, refused recipients
        {address: (code, reply)}, the final reply (code, text)). `message_id`
        None sends none; "" makes one."""
        rcpts = [rcpt_to] if isinstance(rcpt_to, str) else list(rcpt_to)
        msg = EmailMessage()
        msg["From"] = mail_from
        msg["To"] = ", ".join(rcpts)
        msg["Subject"] = subject
        if message_id is not None:
            msg["Message-ID"] = message_id or make_msgid(domain="otel-mta.test")
        msg.set_content(body)
        with smtplib.SMTP(self.host, self.port, local_hostname=helo, timeout=30) as s:
            s.ehlo(helo)
            code, text = s.mail(mail_from)
            if code != 250:
                return msg["Message-ID"], {}, (code, text)
            refused = {}
            for rcpt in rcpts:
                code, text = s.rcpt(rcpt)
                if code >= 400:
                    refused[rcpt] = (code, text)
            if len(refused) == len(rcpts):
                return msg["Message-ID"], refused, (code, text)
            final = s.data(msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
        return msg["Message-ID"], refused, final

    def log_text(self) -> str:
        return self.proc.log_text()

    def stop(self) -> None:
        self.proc.stop()
