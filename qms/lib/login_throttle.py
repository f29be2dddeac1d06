"""Login throttling against password guessing.

Failed logins are counted per username and client IP in the cache. After
QMS_LOGIN_FAILURE_LIMIT failures within QMS_LOGIN_LOCKOUT_SECONDS, that username is
locked from that IP for QMS_LOGIN_LOCKOUT_SECONDS. Keying on the IP as well keeps a
guesser elsewhere from locking the real person out of their own account.

Failures are also counted per client IP alone, whatever the username: after
QMS_LOGIN_ADDRESS_FAILURE_LIMIT of them within the period, every login from that address
is locked for the period, so one address cannot spray a few guesses at many accounts.
The address is qms.lib.http.client_ip(): a forwarded header is believed only from a trusted
proxy, so a guesser cannot spread their failures over addresses they make up.

The lock is enforced by an authentication backend placed before ModelBackend, so every
login path that goes through django.contrib.auth.authenticate() (the admin, any login
view) is covered; the admin's login form checks it first only to say why.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.dispatch import receiver
from django.http import HttpRequest

from qms.lib.http import client_ip


def is_locked(username: str, request: HttpRequest | None) -> bool:
    """This username from this address, or anything from this address, is locked."""
    locks = [_key("locked", username, request)]
    address = client_ip(request)
    if address is not None:
        locks.append(_address_key("locked", address))
    return bool(cache.get_many(locks))


def lockout_message() -> str:
    minutes = max(1, settings.QMS_LOGIN_LOCKOUT_SECONDS // 60)
    return (
        f"Too many failed logins from your address. Try again in {minutes} minutes, or ask "
        "an administrator to check the account."
    )


def note_failure(username: str, request: HttpRequest | None) -> None:
    if is_locked(username, request):
        return
    limit = settings.QMS_LOGIN_FAILURE_LIMIT
    _count(_key("failures", username, request), _key("locked", username, request), limit)
    address = client_ip(request)
    if address is not None:  # A login without a request (a script) has no address to cap.
        limit = settings.QMS_LOGIN_ADDRESS_FAILURE_LIMIT
        _count(_address_key("failures", address), _address_key("locked", address), limit)


def _count(failures_key: str, lock_key: str, limit: int) -> None:
    """One more failure in the window; at the limit, lock for the period."""
    period = settings.QMS_LOGIN_LOCKOUT_SECONDS
    # add() starts the window at the first failure; incr() keeps its expiry.
    cache.add(failures_key, 0, timeout=period)
    try:
        failures = cache.incr(failures_key)
    except ValueError:  # The window ended between add() and incr().
        cache.set(failures_key, 1, timeout=period)
        failures = 1
    if failures >= limit:
        cache.set(lock_key, True, timeout=period)
        cache.delete(failures_key)


def forget_failures(username: str, request: HttpRequest | None) -> None:
    # The address's count stays: a sprayer holding one good password could otherwise
    # start it again between guesses.
    cache.delete(_key("failures", username, request))


def _key(kind: str, username: str, request: HttpRequest | None) -> str:
    # Hashed: a username can hold characters a cache key must not.
    who = f"{username.casefold()}\0{client_ip(request) or '-'}".encode()
    return f"login-throttle:{kind}:{hashlib.sha256(who).hexdigest()}"


def _address_key(kind: str, address: str) -> str:
    return f"login-throttle:address-{kind}:{address}"


class LockoutBackend:
    """Refuses a locked username + IP, or a locked IP, before any other backend checks
    the password.

    Deliberately no BaseBackend: without get_user() it can never become the backend a
    session is tied to (Client.force_login() and login() take the first that has one).
    """

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, **credentials: object
    ) -> None:
        if username is not None and is_locked(username, request):
            # PermissionDenied stops authenticate() here: ModelBackend never sees the
            # password, so a right guess during the lock is worth nothing.
            raise PermissionDenied(lockout_message())
        return None


@receiver(user_login_failed)
def count_failed_login(
    sender: object, credentials: dict, request: HttpRequest | None = None, **kwargs: object
) -> None:
    username = credentials.get("username")
    if isinstance(username, str) and username:
        note_failure(username, request)


@receiver(user_logged_in)
def clear_failed_logins(
    sender: object, request: HttpRequest | None, user: AbstractBaseUser, **kwargs: object
) -> None:
    forget_failures(user.get_username(), request)
