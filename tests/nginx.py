"""A real nginx running the shipped ``deploy/nginx.conf``, for the topology test.

Only what Docker would provide changes: the compose names ``gatewayN:8000`` become the
test's loopback ports and ``listen 80`` a free port. Everything else (timeouts, buffering,
retries to the next replica) is the file compose mounts, byte for byte. The http block
around it stands for the image's /etc/nginx/nginx.conf, plus an access log that names the
replica each request went to.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import skip_or_fail
from tests.processes import free_port

SITE = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf"
# "server gateway2:8000 max_fails=1 fail_timeout=10s;" → the replica's number, the rest.
SERVER = re.compile(r"^(\s*server\s+)gateway(\d+):8000(\s[^;]*)?;", re.M)
LISTEN = "listen 80;"
# Which test call (its x-topo-call header) went to which replicas, with what outcome.
ACCESS_FORMAT = "$http_x_topo_call|$uri|$upstream_addr|$upstream_status|$status"

MAIN = """\
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;
events {{ worker_connections 1024; }}
http {{
    log_format topo '{access_format}';
    access_log {dir}/access.log topo;
    client_body_temp_path {dir}/temp/body;
    proxy_temp_path {dir}/temp/proxy;
    fastcgi_temp_path {dir}/temp/fastcgi;
    uwsgi_temp_path {dir}/temp/uwsgi;
    scgi_temp_path {dir}/temp/scgi;
    include {dir}/site.conf;
}}
"""


def render_site(ports: list[int], listen: int) -> str:
    """``deploy/nginx.conf`` with gateway N at ``127.0.0.1:ports[N-1]``, listening on
    ``127.0.0.1:listen``."""
    text = SITE.read_text()
    numbers = sorted(int(m[2]) for m in SERVER.finditer(text))
    assert numbers == list(range(1, len(ports) + 1)), (numbers, ports)
    assert text.count(LISTEN) == 1, "deploy/nginx.conf must listen on port 80 once"
    text = SERVER.sub(lambda m: f"{m[1]}127.0.0.1:{ports[int(m[2]) - 1]}{m[3] or ''};", text)
    return text.replace(LISTEN, f"listen 127.0.0.1:{listen};")


@dataclass
class Forwarded:
    """One access-log line: the replicas nginx tried, in order, their answers, and ours."""

    call: str
    uri: str
    upstreams: list[str]
    upstream_statuses: list[str]
    status: int


class NginxProcess:
    """nginx in the foreground (``daemon off``) with its files in ``directory``."""

    def __init__(self, directory: Path, replica_ports: list[int]) -> None:
        binary = shutil.which("nginx") or ("/usr/sbin/nginx"
                                           if Path("/usr/sbin/nginx").exists() else None)
        if binary is None:
            skip_or_fail("nginx is not installed")
        self.dir = directory
        (directory / "temp").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (directory / "site.conf").write_text(render_site(replica_ports, self.port))
        conf = directory / "nginx.conf"
        conf.write_text(MAIN.format(dir=directory, access_format=ACCESS_FORMAT))
        check = subprocess.run([binary, "-t", "-p", str(directory), "-c", str(conf),
                                "-e", str(directory / "error.log")],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen([binary, "-p", str(directory), "-c", str(conf),
                                      "-e", str(directory / "error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        self._wait_listening()

    def _wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.error_log()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx does not listen") from None
                time.sleep(0.02)

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text() if path.exists() else ""

    def log(self) -> list[Forwarded]:
        """Every request nginx has finished, in order."""
        lines = []
        for line in (self.dir / "access.log").read_text().splitlines():
            call, uri, addrs, statuses, status = line.split("|")
            lines.append(Forwarded(call, uri, addrs.split(", "), statuses.split(", "),
                                   int(status)))
        return lines

    def forwarded(self, prefix: str) -> dict[str, Forwarded]:
        """The logged requests whose x-topo-call starts with ``prefix``, by that call."""
        return {f.call: f for f in self.log() if f.call.startswith(prefix)}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # nginx's fast shutdown; the workers go with the master
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
