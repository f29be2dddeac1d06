"""Production as it is installed: a virtualenv made from requirements.txt alone runs the web,
a capture node's worker and beat against PostgreSQL and Redis (issue 15, section 1).

`make test` builds that virtualenv (.venv-prod: `pip install -r requirements.txt`, none of
the development tools) and names its interpreter in QMS_PRODUCTION_PYTHON. Everything the
product runs here runs on it, with DEBUG off, configured only through the environment, as
docs/deployment.md installs a server: the deployment checks, collectstatic, gunicorn serving
the pages, `celery -A qms worker -Q capture.test,celery` capturing on lo (the node's sniffer
and its finishing processes), and `celery -A qms beat` whose tasks that worker runs. A SIPp
call on loopback is captured through the worker and played back through gunicorn with a Range
request, behind what nginx would add (X-Forwarded-Proto). A module missing from
requirements.txt fails here, where the development requirements would have hidden it.
"""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.conf import settings

from recorder.models import Recording
from tests.conftest import need
from tests.recorder.nodes.capture_node import (
    NODE,
    REPO_ROOT,
    CaptureWorker,
    RedisServer,
    database_url,
    eventually,
    free_port,
    johns_desk,
    loopback_interface,
    phones,
    stop_process,
)

CALL_SECONDS = 2.0
LANDING_SECONDS = 30.0
# Beat sends each task first one interval after it starts: the stale-call sweep's minute.
BEAT_SECONDS = 100.0
SECRET_KEY = "production-shape-" + "k7Qw9zR2xV5mN8pL3tY6bH1cF4dG0sJ" * 2
PASSWORD = "smoke-test-password-4711"


def production_python() -> str:
    python = os.environ.get("QMS_PRODUCTION_PYTHON", "")
    need(
        bool(python) and Path(python).exists(),
        "needs QMS_PRODUCTION_PYTHON, the interpreter of a virtualenv made from "
        "requirements.txt alone (`make test` builds .venv-prod and sets it)",
    )
    return python


def run(python: str, environment: dict[str, str], *arguments: str) -> str:
    done = subprocess.run(
        [python, *arguments], cwd=REPO_ROOT, env=environment, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, f"{' '.join(arguments)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@dataclass
class Service:
    """A long-running production process with its log."""

    name: str
    command: list[str]
    environment: dict[str, str]
    log: Path
    process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                self.command, cwd=REPO_ROOT, env=self.environment, stdout=log, stderr=log
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        return stop_process(self.process, 20) if self.process is not None else 0


@dataclass
class Browser:
    """HTTP to gunicorn as nginx hands it on (X-Forwarded-Proto: https), keeping cookies
    by hand: they are Secure with DEBUG off, which a client over plain HTTP would drop."""

    port: int
    cookies: dict[str, str] = field(default_factory=dict)

    def request(
        self, method: str, path: str, body: str = "", headers: dict[str, str] | None = None
    ) -> tuple[http.client.HTTPResponse, bytes]:
        sent = {"X-Forwarded-Proto": "https", "Host": f"127.0.0.1:{self.port}"}
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        if body:
            sent["Content-Type"] = "application/x-www-form-urlencoded"
            sent["Origin"] = f"https://127.0.0.1:{self.port}"
        sent.update(headers or {})
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body or None, headers=sent)
            response = connection.getresponse()
            content = response.read()
        finally:
            connection.close()
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            self.cookies[name.strip()] = rest.partition(";")[0]
        return response, content

    def log_in(self, username: str, password: str) -> None:
        response, page = self.request("GET", "/login/")
        assert response.status == 200, page[:2000]
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, page[:2000]
        form = urlencode({"username": username, "password": password,
                          "csrfmiddlewaretoken": token.group(1).decode()})  # fmt: skip
        response, page = self.request("POST", "/login/", form)
        assert response.status == 302, re.findall(rb'(?s)class="errors?.*?</', page)
        assert "sessionid" in self.cookies


def production_environment(tmp_path: Path, broker_url: str) -> dict[str, str]:
    """What an operator's unit files set, and nothing of the test run's own."""
    keep = ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR")
    environment = {name: os.environ[name] for name in keep if name in os.environ}
    environment.update(
        DEBUG="0",
        SECRET_KEY=SECRET_KEY,
        ALLOWED_HOSTS="127.0.0.1",
        DATABASE_URL=database_url(),
        CELERY_BROKER_URL=broker_url,
        QMS_NODE=NODE,
        QMS_VAR_DIR=str(tmp_path / "var"),
        QMS_SPOOL_DIR=str(tmp_path / "var" / "spool"),
        QMS_STATIC_ROOT=str(tmp_path / "static"),
        QMS_RECORDINGS_DIR=str(settings.QMS_RECORDINGS_DIR),
    )
    return environment


def test_a_virtualenv_of_requirements_txt_alone_runs_web_worker_and_beat_end_to_end(
    postgresql: None, redis_server: RedisServer, tmp_path: Path
) -> None:
    python = production_python()
    environment = production_environment(tmp_path, redis_server.url)
    # Production only: none of the development tools are there to hide a missing module.
    for tool in ("pytest", "selenium", "hypothesis", "ruff"):
        found = subprocess.run([python, "-c", f"import {tool}"], capture_output=True)
        assert found.returncode != 0, f"{tool} is installed in the production virtualenv"
    run(python, environment, "-m", "pip", "check")
    run(python, environment, "manage.py", "check", "--deploy", "--fail-level", "ERROR")
    run(python, environment, "manage.py", "migrate", "--check")
    run(python, environment, "manage.py", "collectstatic", "--noinput")
    assert (tmp_path / "static" / "admin" / "css" / "base.css").exists()

    john = johns_desk()
    loopback_interface()
    # As an operator makes the first account (the tests' own password hasher is not
    # production's).
    run(python, {**environment, "DJANGO_SUPERUSER_PASSWORD": PASSWORD}, "manage.py",
        "createsuperuser", "--noinput", "--username", "supervisor", "--email", "")  # fmt: skip
    beat = Service(
        "beat",
        [python, "-m", "celery", "-A", "qms", "beat", "--loglevel", "INFO",
         "--schedule", str(tmp_path / "celerybeat-schedule")],
        environment, tmp_path / "beat.log",
    )  # fmt: skip
    web_port = free_port()
    web = Service(
        "web",
        [python, "-m", "gunicorn", "qms.wsgi:application", "--bind", f"127.0.0.1:{web_port}",
         "--workers", "2", "--access-logfile", "-"],
        environment, tmp_path / "web.log",
    )  # fmt: skip
    # A one-machine install: the node's worker also takes the general queue, beat's tasks.
    worker = CaptureWorker(
        tmp_path, redis_server.url, database_url(), python=python,
        queues=f"capture.{NODE},celery", overrides=environment,
    )  # fmt: skip
    try:
        beat.start()
        web.start()
        with phones(tmp_path, CALL_SECONDS) as phone:
            worker.start()
            phone.register("9001")
            phone.call(CALL_SECONDS)
            eventually(
                lambda: Recording.objects.filter(status="complete").exists(),
                LANDING_SECONDS, "a complete recording", worker.log,
            )  # fmt: skip
        (recording,) = Recording.objects.all()
        assert (recording.agent, recording.extension) == (john, "9001")
        assert recording.duration_seconds == pytest.approx(CALL_SECONDS, abs=0.25)

        browser = Browser(web_port)
        eventually(lambda: _answers(browser), LANDING_SECONDS, "gunicorn to answer", web.log)
        browser.log_in("supervisor", PASSWORD)
        response, page = browser.request("GET", "/recordings/")
        assert response.status == 200 and b"9001" in page, page[:2000]
        response, page = browser.request("GET", f"/recordings/{recording.pk}/")
        assert response.status == 200, page[:2000]
        audio = Path(recording.file.path).read_bytes()
        response, part = browser.request(
            "GET", f"/recordings/{recording.pk}/audio", headers={"Range": "bytes=1000-1999"}
        )
        assert response.status == 206, part[:2000]
        assert response.headers["Content-Range"] == f"bytes 1000-1999/{len(audio)}"
        assert part == audio[1000:2000]

        # Beat's first send is a minute after it starts; the worker runs what it sends.
        eventually(
            lambda: "recorder.tasks.sweep_stale_calls" in beat.text()
            and re.search(r"Task recorder\.tasks\.sweep_stale_calls\[[^]]+\] succeeded",
                          worker.text()) is not None,
            BEAT_SECONDS, "beat's stale-call sweep to run on the worker", beat.log,
        )  # fmt: skip
        assert beat.running() and web.running()
    finally:
        worker_status = worker.stop()
        beat.stop()
        web.stop()
    assert worker_status == 0, worker.text()[-6000:]
    assert "Traceback" not in web.text(), web.text()[-6000:]


def _answers(browser: Browser) -> bool:
    try:
        response, _ = browser.request("GET", "/login/")
    except OSError:
        time.sleep(0.2)
        return False
    return response.status == 200


IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys
import django
django.setup()
failed = []
for package in ("qms", "recorder", "extensions", "integrations"):
    root = importlib.import_module(package)
    for found in pkgutil.walk_packages(root.__path__, package + "."):
        try:
            importlib.import_module(found.name)
        except Exception as error:
            failed.append(f"{found.name}: {error!r}")
print(len(failed), "failed")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_of_the_product_imports_on_requirements_txt_alone(tmp_path: Path) -> None:
    """Beyond the paths the end-to-end run takes: every module of the four packages, the
    admin, the management commands and the migrations included."""
    python = production_python()
    environment = production_environment(tmp_path, "redis://127.0.0.1:1/0")
    environment["DJANGO_SETTINGS_MODULE"] = "qms.settings"
    output = run(python, environment, "-c", IMPORT_EVERY_MODULE)
    assert output.startswith("0 failed"), output
