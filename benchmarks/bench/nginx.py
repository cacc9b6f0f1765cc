"""A private nginx serving static files on 127.0.0.1: the machine's HTTP GET ceiling.

The blob store's GETs are compared with what nginx, a C server sending files from the
page cache with ``sendfile``, achieves on the same machine with the same client at the
same concurrency. This module installs nginx from Debian's packages (only when asked),
writes a configuration of its own in a temporary directory (pid file, error log and
every temp path inside it, ``daemon off`` so the master is our child), starts it on a
free loopback port and stops it by its pid. It never touches a system nginx.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

#: Where Debian puts the binary; /usr/sbin is not on every user's PATH.
DEBIAN_NGINX = "/usr/sbin/nginx"
#: The packages tried in order: the small flavour first (bookworm still has it).
PACKAGES = ("nginx-light", "nginx")


class NginxError(RuntimeError):
    """nginx is missing, would not start or would not install; the message says why."""


def find_nginx() -> str | None:
    """The nginx binary, or None when it is not installed."""
    found = shutil.which("nginx")
    if found:
        return found
    return DEBIAN_NGINX if os.access(DEBIAN_NGINX, os.X_OK) else None


def install_nginx(timeout_s: float = 600.0) -> str:
    """Install nginx with apt-get, non-interactively; the binary's path.

    Runs ``apt-get update`` once, then tries each package of ``PACKAGES``. Needs root.
    Debian may start its own nginx service on port 80 unless a ``policy-rc.d`` forbids
    it; that service is the system's, and this tool neither uses nor stops it.
    """
    found = find_nginx()
    if found:
        return found
    if shutil.which("apt-get") is None:
        raise NginxError("nginx is not installed and apt-get is not available: install it "
                         "by hand")
    if os.geteuid() != 0:
        raise NginxError("installing nginx needs root: run `sudo apt-get install nginx-light`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, timeout=timeout_s,
                   stdin=subprocess.DEVNULL)
    for package in PACKAGES:
        done = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                               package], env=env, timeout=timeout_s, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True)
        found = find_nginx()
        if done.returncode == 0 and found:
            return found
    raise NginxError(f"apt-get could not install any of {', '.join(PACKAGES)}")


def free_port() -> int:
    """A loopback port the OS considers free right now (nginx binds it just after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _temp_path_directives(binary: str, base: Path) -> list[str]:
    """A temp path inside ``base`` for every module this build has (``nginx -V`` names
    each one's compiled-in default, which an unprivileged user cannot create)."""
    built = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=30).stderr
    lines = []
    for module in re.findall(r"--http-(\w+)-temp-path=", built):
        directive = {"client-body": "client_body"}.get(module, module)
        lines.append(f"    {directive}_temp_path {base / ('tmp-' + module)};")
    return lines


class Nginx:
    """One nginx master (our child) and its workers, serving ``files`` from a temp dir.

    Resource handling: ``start()`` creates the directory and the process; ``stop()``
    (also on leaving the ``with`` block) sends SIGTERM to the master's pid, waits, then
    SIGKILLs that pid if needed, and removes the directory.
    """

    def __init__(self, binary: str, files: dict[str, memoryview], *,
                 workers: int | None = None, start_timeout_s: float = 10.0) -> None:
        self.binary = binary
        self.files = files
        self.workers = workers or os.cpu_count() or 1
        self.start_timeout_s = start_timeout_s
        self.base = Path(tempfile.mkdtemp(prefix="blobstore-bench-nginx-"))
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def _write_config(self) -> Path:
        www = self.base / "www"
        www.mkdir(exist_ok=True)
        for name, data in self.files.items():
            (www / name).write_bytes(data)
        # Workers run as "nobody" when the master is root: they must reach the files.
        for path in (self.base, www, *www.iterdir()):
            path.chmod(0o755)
        base = self.base
        lines = [
            "daemon off;", "master_process on;", f"worker_processes {self.workers};",
            f"pid {base / 'nginx.pid'};", f"error_log {base / 'error.log'} warn;",
            "events { worker_connections 1024; }",
            "http {",
            "    access_log off;", "    sendfile on;", "    tcp_nopush on;",
            "    tcp_nodelay on;", "    keepalive_requests 10000000;",
            "    keepalive_timeout 300s;", "    default_type application/octet-stream;",
            *_temp_path_directives(self.binary, base),
            f"    server {{ listen 127.0.0.1:{self.port}; root {www}; location / {{ }} }}",
            "}",
        ]
        config = base / "nginx.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self) -> Nginx:
        """Start on a free port (three tries: another process may take the port first)."""
        for _ in range(3):
            self.port = free_port()
            config = self._write_config()
            log = open(self.base / "stderr.log", "ab")
            try:
                self._proc = subprocess.Popen(
                    [self.binary, "-p", str(self.base), "-e", str(self.base / "error.log"),
                     "-c", str(config)], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            finally:
                log.close()
            if self._wait_listening():
                return self
            self._stop_process()
        raise NginxError(f"nginx did not start: {self.log_tail()}")

    def _wait_listening(self) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def log_tail(self, chars: int = 2000) -> str:
        text = ""
        for name in ("stderr.log", "error.log"):
            try:
                text += (self.base / name).read_text(errors="replace")
            except FileNotFoundError:
                pass
        return text[-chars:]

    def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # nginx's fast shutdown; the master stops workers
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def stop(self) -> None:
        self._stop_process()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
