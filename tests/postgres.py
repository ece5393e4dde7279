"""A throwaway PostgreSQL server for the tests: initdb + pg_ctl on 127.0.0.1 and a free port.

pytest-postgresql's process fixture runs the server as the current user, and initdb refuses root;
as root we run the server as the ``postgres`` system user instead (runuser).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self):
        # its own folder directly under /tmp: the postgres user cannot enter pytest's root-only tmp_path
        self.folder = Path(tempfile.mkdtemp(prefix="edgetune-pg-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        self._as_user = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", "postgres", "--"]

    @staticmethod
    def available() -> bool:
        return all(shutil.which(tool) for tool in ("initdb", "pg_ctl"))

    def _run(self, *command: str) -> None:
        done = subprocess.run([*self._as_user, *command], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command[:2])} failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> "PostgresServer":
        if self._as_user:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "edgetune", "--auth=trust", "-E", "UTF8")
        self.resume()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "edgetune", "edgetune")
        return self

    def resume(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop("immediate")
        except RuntimeError:
            pass  # already stopped
        shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://edgetune@127.0.0.1:{self.port}/edgetune"

    def wait_ready(self, seconds: float = 10) -> None:
        deadline = time.time() + seconds
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
