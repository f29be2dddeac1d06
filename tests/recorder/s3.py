"""A real S3-compatible server on loopback for the tests: moto's server mode (the
`moto[s3]` package with flask and flask-cors, its server's own needs, in the development
requirements: the S3 service alone, not every AWS service's), run as a process of its own and
spoken to over HTTP by boto3, exactly as QMS speaks to a bucket in production. Nothing of
boto3 is mocked; stopping the process is a storage out of reach."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

REGION = "us-east-1"
STARTUP_SECONDS = 30.0
# The server's log colours some lines for a terminal.
TERMINAL_COLOURS = re.compile(r"\x1b\[[0-9;]*m")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class S3Server:
    """moto_server on 127.0.0.1, its request log (one line a request) in `log`."""

    def __init__(self, log: Path, port: int | None = None) -> None:
        self.log = log
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto_server did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def requests(self) -> list[str]:
        """The request lines the server has logged so far, such as 'GET /bucket/key ... 206'."""
        lines = TERMINAL_COLOURS.sub("", self.log.read_text()).splitlines()
        return [line for line in lines if '"' in line]

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False
