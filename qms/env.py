"""Typed readers for settings that come from the environment.

Every reader names the variable in its error, so a bad setting stops start-up with a
sentence the operator can act on instead of falling back to a silent default.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}

DATABASE_ENGINES = {
    "postgres": "django.db.backends.postgresql",
    "postgresql": "django.db.backends.postgresql",
    "pgsql": "django.db.backends.postgresql",
    "sqlite": "django.db.backends.sqlite3",
}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(
        f"{name} must be one of 1/0, true/false, yes/no or on/off, not {raw!r}."
    )


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    items = [item.strip() for item in raw.split(",")]
    if any(item == "" for item in items):
        raise ImproperlyConfigured(
            f"{name} must be a comma-separated list without empty items, not {raw!r}."
        )
    return items


def env_choice(name: str, default: str, choices: list[str]) -> str:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().upper()
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, not {raw!r}.")
    return value


def env_path(name: str, default: Path) -> Path:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return Path(raw.strip()).expanduser()


def env_url_path(name: str) -> str:
    """An absolute URL path ending in a slash, such as nginx's /protected-recordings/."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return ""
    segments = raw.strip("/").split("/")
    if not (raw.startswith("/") and raw.endswith("/")) or ".." in segments or "" in segments:
        raise ImproperlyConfigured(
            f"{name} must be a URL path that starts and ends with /, such as "
            f"/protected-recordings/, not {raw!r}."
        )
    return raw


def env_cache(name: str) -> dict:
    """A CACHES entry: Redis for redis://, rediss:// or unix:// URLs, else process memory."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    if urlsplit(raw).scheme not in ("redis", "rediss", "unix"):
        raise ImproperlyConfigured(
            f"{name} must be a Redis URL such as redis://127.0.0.1:6379/1, "
            f"not {_without_password(raw)!r}."
        )
    return {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": raw,
        "KEY_PREFIX": "qms",
    }


def env_database(name: str, default: str) -> dict:
    """Parse a DATABASE_URL such as postgres://user:pw@host:5432/qms or sqlite:///var/qms.db."""
    raw = os.environ.get(name) or default
    try:
        return parse_database_url(raw)
    except ValueError as error:
        raise ImproperlyConfigured(
            f"{name} is not a usable database URL ({error}): {_without_password(raw)!r}."
        ) from None


def _without_password(url: str) -> str:
    # The error goes to terminals and logs: show the URL's shape, never the password.
    parts = urlsplit(url)
    if parts.password is None:
        return url
    credentials, _, address = parts.netloc.rpartition("@")
    user = credentials.partition(":")[0]
    return parts._replace(netloc=f"{user}:***@{address}").geturl()


def parse_database_url(url: str) -> dict:
    parts = urlsplit(url)
    engine = DATABASE_ENGINES.get(parts.scheme)
    if engine is None:
        known = ", ".join(sorted(DATABASE_ENGINES))
        raise ValueError(f"the scheme must be one of {known}")
    if engine.endswith("sqlite3"):
        return _sqlite_database(parts.path, engine)
    return _server_database(parts, engine)


def _sqlite_database(path: str, engine: str) -> dict:
    # sqlite:///relative/path.db keeps one slash as the separator; sqlite:////abs/path.db is
    # absolute. ":memory:" is accepted as SQLite spells it.
    name = path[1:] if path.startswith("/") else path
    if not name:
        raise ValueError("a SQLite URL needs a file name, as in sqlite:///var/qms.sqlite3")
    # WAL lets the web read while a capture writes; NORMAL syncs at checkpoints rather
    # than at every commit, which is safe in WAL mode. IMMEDIATE takes the write lock at
    # the start of a transaction, so two writers queue instead of failing mid-way.
    options = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
    return {"ENGINE": engine, "NAME": name, "OPTIONS": options}


def _server_database(parts, engine: str) -> dict:
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ValueError("the URL must end with the database name, as in /qms")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    return {
        "ENGINE": engine,
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        # A Unix socket directory is written percent-encoded: %2Fvar%2Frun%2Fpostgresql.
        "HOST": unquote(parts.hostname or ""),
        "PORT": str(port or ""),
        "OPTIONS": dict(parse_qsl(parts.query)),
        "CONN_MAX_AGE": 60,
    }
