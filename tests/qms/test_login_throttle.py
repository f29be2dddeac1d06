"""Login throttling against password guessing (issue 6, section 1), on the cache QMS runs
with: process memory by default, Redis when CACHE_URL names it."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client, RequestFactory, override_settings

from tests.conftest import need

TEST_REDIS_URL = os.environ.get("QMS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PASSWORD = "the-right-password-42"
LOGIN_URL = "/admin/login/?next=/admin/"

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["memory", "redis"])
def throttle_cache(request: pytest.FixtureRequest):
    if request.param == "memory":
        cache.clear()
        yield "memory"
        cache.clear()
        return
    redis_cache = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": TEST_REDIS_URL,
        # Its own prefix, so the test never flushes a database others use.
        "KEY_PREFIX": f"qms-test-{uuid.uuid4().hex}",
    }
    with override_settings(CACHES={"default": redis_cache}):
        try:
            cache.get("ping")
        except redis.exceptions.RedisError as error:
            need(False, f"needs Redis at {TEST_REDIS_URL} (QMS_TEST_REDIS_URL): {error}")
        yield "redis"


@pytest.fixture
def staff() -> User:
    return User.objects.create_user("desk-admin", password=PASSWORD, is_staff=True)


def admin_login(password: str, ip: str = "198.51.100.4", username: str = "desk-admin"):
    client = Client(REMOTE_ADDR=ip)
    response = client.post(LOGIN_URL, {"username": username, "password": password})
    return client, response


def fail(times: int, ip: str = "198.51.100.4", username: str = "desk-admin") -> None:
    for _ in range(times):
        _, response = admin_login("a-wrong-guess", ip, username)
        assert response.status_code == 200  # The form again, with its error.


@override_settings(QMS_LOGIN_FAILURE_LIMIT=5)
def test_five_failures_lock_the_user_out_even_with_the_right_password(
    throttle_cache: str, staff: User
) -> None:
    fail(5)
    client, response = admin_login(PASSWORD)
    assert response.status_code == 200
    assert "Too many failed logins" in response.content.decode()
    assert "_auth_user_id" not in client.session


@override_settings(QMS_LOGIN_FAILURE_LIMIT=5)
def test_four_failures_do_not_lock(throttle_cache: str, staff: User) -> None:
    fail(4)
    client, response = admin_login(PASSWORD)
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(staff.pk)


@override_settings(QMS_LOGIN_FAILURE_LIMIT=5)
def test_the_lock_holds_for_that_address_only(throttle_cache: str, staff: User) -> None:
    fail(5, ip="198.51.100.4")
    _, response = admin_login(PASSWORD, ip="192.0.2.8")
    assert response.status_code == 302


@override_settings(QMS_LOGIN_FAILURE_LIMIT=5)
def test_a_good_login_starts_the_count_again(throttle_cache: str, staff: User) -> None:
    fail(4)
    assert admin_login(PASSWORD)[1].status_code == 302
    fail(4)
    assert admin_login(PASSWORD)[1].status_code == 302


@override_settings(QMS_LOGIN_FAILURE_LIMIT=3)
def test_every_login_path_through_authenticate_is_locked(throttle_cache: str, staff: User) -> None:
    request = RequestFactory().post("/any/login/", REMOTE_ADDR="198.51.100.4")
    for _ in range(3):
        assert authenticate(request, username="desk-admin", password="a-wrong-guess") is None
    assert authenticate(request, username="desk-admin", password=PASSWORD) is None
    elsewhere = RequestFactory().post("/any/login/", REMOTE_ADDR="192.0.2.8")
    assert authenticate(elsewhere, username="desk-admin", password=PASSWORD) == staff


@override_settings(QMS_LOGIN_FAILURE_LIMIT=3)
def test_an_unknown_username_locks_the_same_way(throttle_cache: str) -> None:
    # The same answer for a name that does not exist: the lock tells nothing about accounts.
    fail(3, username="no-such-person")
    _, response = admin_login("anything", username="no-such-person")
    assert "Too many failed logins" in response.content.decode()


@override_settings(QMS_LOGIN_FAILURE_LIMIT=3, QMS_LOGIN_LOCKOUT_SECONDS=1)
def test_the_lock_lifts_after_the_lockout_period(throttle_cache: str, staff: User) -> None:
    fail(3)
    assert admin_login(PASSWORD)[1].status_code == 200
    time.sleep(1.5)
    assert admin_login(PASSWORD)[1].status_code == 302


# Password spraying: many usernames from one address (issue 11, finding L5). ---------------


def spray(usernames: int, ip: str, **headers: str) -> None:
    """One wrong guess for each of `usernames` accounts from the socket peer `ip`."""
    for index in range(usernames):
        client = Client(REMOTE_ADDR=ip, **headers)
        client.post(LOGIN_URL, {"username": f"user-{index}", "password": "Summer2026!"})


@override_settings(QMS_LOGIN_FAILURE_LIMIT=5, QMS_LOGIN_ADDRESS_FAILURE_LIMIT=20)
def test_twenty_failures_across_usernames_lock_that_address_for_everyone(
    throttle_cache: str, staff: User
) -> None:
    spray(19, ip="198.51.100.4")
    # Nineteen do not lock; a good login between them does not start the count again.
    assert admin_login(PASSWORD, ip="198.51.100.4")[1].status_code == 302
    spray(1, ip="198.51.100.4")
    client, response = admin_login(PASSWORD, ip="198.51.100.4")
    assert "Too many failed logins from your address" in response.content.decode()
    assert "_auth_user_id" not in client.session
    # Another address is not locked: the cap is the sprayer's, not the account's.
    assert admin_login(PASSWORD, ip="192.0.2.8")[1].status_code == 302


@override_settings(
    QMS_LOGIN_FAILURE_LIMIT=5,
    QMS_LOGIN_ADDRESS_FAILURE_LIMIT=20,
    QMS_CLIENT_IP_HEADER="X-Forwarded-For",
    QMS_TRUSTED_PROXIES=[ipaddress.ip_network("10.0.0.1/32")],
)
def test_a_forwarded_address_is_believed_only_from_a_trusted_proxy(
    throttle_cache: str, staff: User
) -> None:
    # A sprayer that names a new address in each request, straight to gunicorn, is still
    # one address: the header of a peer that is no trusted proxy is ignored.
    for index in range(20):
        forged = Client(REMOTE_ADDR="198.51.100.9", HTTP_X_FORWARDED_FOR=f"203.0.113.{index}")
        forged.post(LOGIN_URL, {"username": f"user-{index}", "password": "Summer2026!"})
    assert admin_login(PASSWORD, ip="198.51.100.9")[1].status_code == 200
    # Through the proxy, the client it names is the one counted and locked, not the proxy.
    spray(20, ip="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.50, 198.51.100.77")
    assert "Too many failed logins" in proxied_login("198.51.100.77").content.decode()
    assert proxied_login("192.0.2.30").status_code == 302


def proxied_login(client_address: str):
    client = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=client_address)
    return client.post(LOGIN_URL, {"username": "desk-admin", "password": PASSWORD})


def test_a_bad_trusted_proxy_stops_start_up_naming_the_variable(tmp_path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("QMS_")}
    env |= {
        "DJANGO_SETTINGS_MODULE": "qms.settings",
        "DEBUG": "1",
        "QMS_VAR_DIR": str(tmp_path),
        "QMS_TRUSTED_PROXIES": "127.0.0.1,10.0.0.0/33",
    }
    env.pop("DATABASE_URL", None)
    checked = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode != 0
    assert "QMS_TRUSTED_PROXIES" in checked.stderr and "'10.0.0.0/33'" in checked.stderr
    assert "Traceback" not in checked.stderr
