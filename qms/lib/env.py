"""Typed readers for settings that come from the environment.

Every reader names the variable in its error, so a bad setting stops start-up with a
sentence the operator can act on instead of falling back to a silent default. The error
is a SettingsError: manage.py, qms/wsgi.py and qms/celery.py print its sentence alone,
without a traceback, and exit non-zero.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import sys
import zoneinfo
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}

# No integer setting needs more; a bigger one is a typo that would overflow later.
INT_CEILING = 2**31 - 1
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# RFC 9110 section 5.1: a field name is a token.
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class SettingsError(ImproperlyConfigured):
    """A value from the environment QMS cannot start with. Its message is one sentence
    that names the variable and never shows a password."""


def report_plainly(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    """sys.excepthook for the entry points: a SettingsError that reaches the top is its
    sentence alone (the interpreter still exits with status 1); anything else as usual."""
    if isinstance(error, SettingsError):
        print(error, file=sys.stderr)
    else:
        sys.__excepthook__(kind, error, trace)


DATABASE_ENGINES = {
    "postgres": "django.db.backends.postgresql",
    "postgresql": "django.db.backends.postgresql",
    "pgsql": "django.db.backends.postgresql",
    "sqlite": "qms.lib.sqlite3",
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
    raise SettingsError(f"{name} must be one of 1/0, true/false, yes/no or on/off, not {raw!r}.")


def env_int(name: str, default: int, minimum: int | None = None, maximum: int = INT_CEILING) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip()
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise SettingsError(f"{name} must be a whole number, not {raw[:40]!r}.")
    # Thousands of digits: Python's int() refuses them itself. No setting needs 19.
    if len(text.lstrip("+-0")) > 18:
        bounds = f"at most {maximum}" if minimum is None else f"from {minimum} to {maximum}"
        raise SettingsError(f"{name} must be a whole number {bounds}, not {text[:40]}.")
    value = int(text)
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, not {value}.")
    if value > maximum:
        raise SettingsError(f"{name} must be at most {maximum}, not {value}.")
    return value


def env_time_zone(name: str, default: str) -> str:
    """An IANA time zone name such as Europe/Paris, checked against the zone database."""
    value = os.environ.get(name, "").strip() or default
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            f"{name} must be a time zone of the IANA database such as UTC or Europe/Paris, "
            f"not {value!r}."
        ) from None
    return value


def env_header(name: str) -> str:
    """An HTTP header name such as X-Real-IP, or empty."""
    value = os.environ.get(name, "").strip()
    if value and not HEADER_NAME.fullmatch(value):
        raise SettingsError(
            f"{name} must be an HTTP header name such as X-Real-IP (letters, digits and "
            f"'-', no spaces), not {value!r}."
        )
    return value


def env_directory(name: str, default: Path, create: bool = False) -> Path:
    """A directory: if it exists it must be one; with `create`, it is made now, so a path
    QMS cannot write stops start-up here rather than the first recording."""
    path = env_path(name, default)
    return ensure_directory(name, path) if create else _not_a_file(name, path)


def ensure_directory(name: str, path: Path) -> Path:
    _not_a_file(name, path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SettingsError(
            f"{name} needs the directory {str(path)!r}, which QMS cannot create ({error.strerror})."
        ) from None
    return path


def _not_a_file(name: str, path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise SettingsError(f"{name} needs {str(path)!r} to be a directory, and it is not one.")
    return path


def secret_key(name: str, debug: bool) -> str:
    """The SECRET_KEY: with DEBUG off, long and random enough to sign sessions with (the
    measure of Django's own deployment check, security.W009)."""
    value = os.environ.get(name, "")
    if debug:
        return value or "insecure-development-key-only-used-with-DEBUG-on"
    if not value:
        raise SettingsError(
            f"{name} must be set when DEBUG is off: use a long random string, for example "
            "the output of `python3 -c 'import secrets; print(secrets.token_urlsafe(50))'`."
        )
    if len(value) < 50 or len(set(value)) < 5 or value.startswith("django-insecure"):
        raise SettingsError(
            f"{name} is too short or too plain for DEBUG off: it needs at least 50 characters "
            "and 5 different ones, for example the output of "
            "`python3 -c 'import secrets; print(secrets.token_urlsafe(50))'`."
        )
    return value


# The longest shared secret: HEP carries it in one chunk, and no agent takes a longer one.
SHARED_SECRET_MAX = 255


def env_shared_secret(name: str) -> str:
    """A password that other programs send as they were given it (HEP's authentication
    key): printable ASCII, no space at either end, or empty for none. Its value is never
    shown in an error."""
    value = os.environ.get(name, "")
    if not value:
        return ""
    if not (value.isascii() and value.isprintable()) or value != value.strip():
        raise SettingsError(
            f"{name} must be printable ASCII with no space at its start or end (the agents "
            "send it as they are given it); the value set is not."
        )
    if len(value) > SHARED_SECRET_MAX:
        raise SettingsError(
            f"{name} must be at most {SHARED_SECRET_MAX} characters; the value set has "
            f"{len(value)}."
        )
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    items = [item.strip() for item in raw.split(",")]
    if any(item == "" for item in items):
        raise SettingsError(
            f"{name} must be a comma-separated list without empty items, not {raw!r}."
        )
    return items


def env_networks(name: str, default: list[str]) -> list[IPNetwork]:
    """A comma-separated list of IP addresses or networks, such as 10.0.0.5,192.0.2.0/24."""
    networks = []
    for item in env_list(name, default):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise SettingsError(
                f"{name} must be a comma-separated list of IP addresses or networks such as "
                f"127.0.0.1,10.0.0.0/8, and {item[:60]!r} is neither."
            ) from None
    return networks


def env_choice(name: str, default: str, choices: list[str]) -> str:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().upper()
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, not {raw!r}.")
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
        raise SettingsError(
            f"{name} must be a URL path that starts and ends with /, such as "
            f"/protected-recordings/, not {raw!r}."
        )
    return raw


def env_cache(name: str) -> dict:
    """A CACHES entry: Redis for redis://, rediss:// or unix:// URLs, else process memory."""
    raw = env_redis_url(name)
    if not raw:
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    return {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": raw,
        "KEY_PREFIX": "qms",
    }


def env_redis_url(name: str, default: str = "") -> str:
    """A redis://, rediss:// or unix:// URL, or empty (`default` when the variable is not
    set)."""
    raw = os.environ.get(name, default).strip()
    if not raw:
        return ""
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - read for its ValueError on a port that is no number
    except ValueError as error:
        raise SettingsError(
            f"{name} is not a usable Redis URL ({error}): {_without_password(raw)!r}."
        ) from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise SettingsError(
            f"{name} must be a Redis URL such as redis://127.0.0.1:6379/1, "
            f"not {_without_password(raw)!r}."
        )
    return raw


def env_database(name: str, default: str) -> dict:
    """Parse a DATABASE_URL such as postgres://user:pw@host:5432/qms or sqlite:///var/qms.db."""
    raw = os.environ.get(name) or default
    try:
        return parse_database_url(raw)
    except ValueError as error:
        raise SettingsError(
            f"{name} is not a usable database URL ({error}): {_without_password(raw)!r}."
        ) from None


def _without_password(url: str) -> str:
    # The error goes to terminals and logs: show the URL's shape, never the password. By
    # pattern, not urlsplit: the URL being shown may be one urlsplit refuses.
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*):[^/]*@", r"\1:***@", url)


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


# S3 bucket names (AWS's naming rules, which S3-compatible stores follow): 3 to 63 lower-case
# letters, digits, dots and hyphens, beginning and ending with a letter or digit.
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
REGION_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
S3_STORAGE = "qms.lib.s3.RecordingsBucket"


def env_s3_storage() -> dict:
    """A STORAGES entry for a bucket of an S3-compatible object store (qms/lib/s3.py,
    django-storages' S3Storage on boto3): QMS_S3_BUCKET, and optionally
    QMS_S3_ENDPOINT_URL (any store but AWS), QMS_S3_REGION, QMS_S3_PREFIX and
    QMS_S3_ADDRESSING_STYLE. The credentials are not
    settings of QMS: boto3 finds them as it always does (AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY, a profile, an instance role), so they never pass through here."""
    bucket = os.environ.get("QMS_S3_BUCKET", "").strip()
    if not BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
        raise SettingsError(
            "QMS_S3_BUCKET must name the recordings' bucket (3 to 63 lower-case letters, "
            f"digits, '.' and '-') when QMS_RECORDINGS_STORAGE is s3, not {bucket!r}."
        )
    region = os.environ.get("QMS_S3_REGION", "").strip()
    if region and not REGION_NAME.fullmatch(region):
        raise SettingsError(
            f"QMS_S3_REGION must be a region name such as eu-west-1, not {region[:60]!r}."
        )
    options = {
        "bucket_name": bucket,
        "endpoint_url": env_http_url("QMS_S3_ENDPOINT_URL") or None,
        "region_name": region or None,
        "location": _object_prefix("QMS_S3_PREFIX"),
        "addressing_style": env_choice(
            "QMS_S3_ADDRESSING_STYLE", "AUTO", ["AUTO", "PATH", "VIRTUAL"]
        ).lower(),
        # A recording is named by its call, and finishing a call again overwrites it.
        "file_overwrite": True,
        # Private objects: nobody reads the bucket but QMS.
        "default_acl": None,
        "querystring_auth": True,
        "signature_version": "s3v4",
    }
    return {"BACKEND": S3_STORAGE, "OPTIONS": options}


def env_http_url(name: str) -> str:
    """An http:// or https:// URL such as http://127.0.0.1:9000, or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return ""
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - read for its ValueError on a port that is no number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(
            f"{name} must be an http:// or https:// URL such as https://s3.example.com, "
            f"not {_without_password(raw)!r}."
        )
    return raw


def _object_prefix(name: str) -> str:
    """A folder of the bucket, such as qms/recordings, or empty for the bucket's root."""
    prefix = os.environ.get(name, "").strip().strip("/")
    if prefix and (".." in prefix.split("/") or "" in prefix.split("/")):
        raise SettingsError(f"{name} must be a folder of the bucket such as qms, not {prefix!r}.")
    return prefix


# A master key's id: it is written into every file sealed under it (recorder/media/sealed.py).
KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MASTER_KEY_BYTES = 32


def env_recording_keys(name: str) -> dict[str, bytes]:
    """The master keys recordings are sealed with, by id: `id:base64,id:base64` (each key
    32 random bytes, base64), or `file:/path` to a file of such `id:base64` lines (blank
    lines and # comments allowed). Empty: none. A key's bytes never appear in an error."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return {}
    if raw.startswith("file:"):
        entries, where = _key_file_lines(name, Path(raw[5:]).expanduser()), f"{raw[5:]!r} ({name})"
    else:
        entries, where = [item.strip() for item in raw.split(",")], name
    keys: dict[str, bytes] = {}
    for number, entry in enumerate(entries, start=1):
        key_id, key = _master_key(where, number, entry)
        if key_id in keys:
            raise SettingsError(f"{where} names the key id {key_id!r} twice.")
        keys[key_id] = key
    return keys


def _key_file_lines(name: str, path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        why = getattr(error, "strerror", None) or "not ASCII text"
        raise SettingsError(f"{name} names the key file {str(path)!r}, which QMS cannot read "
                            f"({why}).") from None  # fmt: skip
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _master_key(where: str, number: int, entry: str) -> tuple[str, bytes]:
    key_id, _, encoded = entry.partition(":")
    key_id = key_id.strip()
    if not KEY_ID.fullmatch(key_id):
        raise SettingsError(
            f"{where}: key {number} must be written id:base64-key, with an id of letters, "
            "digits, '.', '_' and '-' (at most 64); it is not."
        )
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        key = b""
    if len(key) != MASTER_KEY_BYTES:
        raise SettingsError(
            f"{where}: the key {key_id!r} must be 32 random bytes in base64 (for example the "
            "output of `python3 -c 'import os, base64; print(base64.b64encode(os.urandom(32))"
            ".decode())'`); it is not."
        )
    return key_id, key


def env_recording_key_id(name: str, keys: dict[str, bytes], keys_name: str) -> str:
    """The id of the master key new recordings are sealed with, one of `keys`; empty:
    recordings are stored plain."""
    key_id = os.environ.get(name, "").strip()
    if key_id and key_id not in keys:
        known = ", ".join(sorted(keys)) or "none"
        raise SettingsError(
            f"{name} is {key_id[:64]!r}, which is not a key id of {keys_name} (it has: {known})."
        )
    return key_id
