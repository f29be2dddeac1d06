"""QMS settings, read from the environment (see docs/configuration.md)."""

from __future__ import annotations

import os
import re
import socket
from datetime import timedelta
from pathlib import Path

from qms.lib.env import (
    SettingsError,
    ensure_directory,
    env_bool,
    env_cache,
    env_choice,
    env_database,
    env_directory,
    env_header,
    env_int,
    env_list,
    env_networks,
    env_recording_key_id,
    env_recording_keys,
    env_redis_url,
    env_s3_storage,
    env_shared_secret,
    env_str,
    env_time_zone,
    env_url_path,
    secret_key,
)

BASE_DIR = Path(__file__).resolve().parent.parent
# Made when set, so a path QMS cannot write stops start-up with its name.
VAR_DIR = env_directory("QMS_VAR_DIR", BASE_DIR / "var", create="QMS_VAR_DIR" in os.environ)

DEBUG = env_bool("DEBUG", False)

SECRET_KEY = secret_key("SECRET_KEY", DEBUG)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "qms.apps.QMSAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "qms.apps.QMSConfig",
    "extensions",
    "recorder",
    "recorder.nodes.apps.CaptureConfig",
    "integrations.shoretel",
    "csp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "qms.urls"
WSGI_APPLICATION = "qms.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env_database("DATABASE_URL", f"sqlite:///{VAR_DIR / 'qms.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The embedded default keeps its database under var/, which a fresh clone lacks.
    ensure_directory(
        "DATABASE_URL" if os.environ.get("DATABASE_URL") else "QMS_VAR_DIR",
        Path(DATABASES["default"]["NAME"]).parent,
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Login throttling counts failures here, so in production, with several gunicorn workers,
# point CACHE_URL at Redis: a per-process memory cache would count per worker.
CACHES = {"default": env_cache("CACHE_URL")}

AUTHENTICATION_BACKENDS = [
    # Refuses a locked username + client IP before any password is checked (docs/playback.md).
    "qms.lib.login_throttle.LockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# After this many failed logins for one username from one client IP within the lockout
# period, that username is locked for that IP for the lockout period.
QMS_LOGIN_FAILURE_LIMIT = env_int("QMS_LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=1000)
# After this many failed logins from one client address within the lockout period, whatever
# the usernames (password spraying), that address is locked for the lockout period.
QMS_LOGIN_ADDRESS_FAILURE_LIMIT = env_int(
    "QMS_LOGIN_ADDRESS_FAILURE_LIMIT", 20, minimum=1, maximum=100000
)
QMS_LOGIN_LOCKOUT_SECONDS = (
    env_int("QMS_LOGIN_LOCKOUT_MINUTES", 15, minimum=1, maximum=30 * 24 * 60) * 60
)
# The pages' own login admits every active user; the admin keeps its own, for staff.
LOGIN_URL = "recorder:login"
LOGIN_REDIRECT_URL = "recorder:list"
LOGOUT_REDIRECT_URL = "recorder:login"

# The recordings' search indexes carry extra columns (INCLUDE) for PostgreSQL's index-only
# scans; SQLite, the embedded default, builds them without those columns, which is fine.
SILENCED_SYSTEM_CHECKS = ["models.W040"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_time_zone("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env_directory("QMS_STATIC_ROOT", VAR_DIR / "static")

QMS_RECORDINGS_DIR = env_directory("QMS_RECORDINGS_DIR", VAR_DIR / "recordings")
# Calls being recorded are spooled here, on local disk, until they end.
QMS_SPOOL_DIR = env_directory("QMS_SPOOL_DIR", VAR_DIR / "spool")
# Record RTP of known phones that no signalling announced (encrypted SIP, ShoreTel).
QMS_RECORD_UNSIGNALLED = env_bool("QMS_RECORD_UNSIGNALLED", True)
# A call longer than this is split into segments, each its own recording, linked by a
# conversation id, so an endless stream never makes an endless file.
QMS_MAX_CALL_SECONDS = env_int("QMS_MAX_CALL_SECONDS", 4 * 3600, minimum=60, maximum=7 * 86400)
# sniff and import_pcap finish recordings (decode, audio file, row) in this many processes
# of their own, off the capture process; 0 finishes them in the capture process's database
# thread (recorder/recordings/finisher.py). By default one for each core this process may
# run on, at most 4 (about 170 MiB each): they run at a lower priority than the capture,
# so a burst of call ends takes the cores the capture leaves idle and never the capture's.
QMS_FINISH_PROCESSES = env_int(
    "QMS_FINISH_PROCESSES", min(4, len(os.sched_getaffinity(0))), minimum=0, maximum=64
)
# Each capture interface's kernel ring, in MiB (tcpdump -B): how long a burst the engine
# has not caught up with can last before the kernel drops packets. At 100,000 packets/s of
# G.711 a mirror port fills about 27 MiB a second (docs/capture.md).
QMS_CAPTURE_BUFFER_MIB = env_int("QMS_CAPTURE_BUFFER_MIB", 512, minimum=2, maximum=65536)
# Each capture interface's second ring, for everything but RTP and RTCP (signalling above
# all), so that media filling its ring never costs a BYE or a REGISTER. 32 MiB holds some
# 40,000 SIP messages the engine has not yet taken.
QMS_SIGNALLING_BUFFER_MIB = env_int("QMS_SIGNALLING_BUFFER_MIB", 32, minimum=2, maximum=65536)
# The shared secret HEP agents send in their authentication key chunk (heplify -hp,
# Kamailio's siptrace auth_key): when set, a HEP listener takes only packets that carry it.
QMS_HEP_AUTH_KEY = env_shared_secret("QMS_HEP_AUTH_KEY")
# wav (PCM16, every browser plays it) or opus (Ogg/Opus, several times smaller).
QMS_RECORDING_FORMAT = env_choice("QMS_RECORDING_FORMAT", "WAV", ["WAV", "OPUS"]).lower()
# Encryption at rest (docs/security.md, "Recordings encrypted at rest"): the master keys,
# by id (`id:base64,...` or `file:/etc/qms/recording-keys`), never in the database; and
# the id new recordings are sealed under. Empty: recordings are stored plain.
QMS_RECORDING_KEYS = env_recording_keys("QMS_RECORDING_KEYS")
QMS_RECORDING_KEY_ID = env_recording_key_id(
    "QMS_RECORDING_KEY_ID", QMS_RECORDING_KEYS, "QMS_RECORDING_KEYS"
)
# The class that wraps and unwraps data keys: the settings' keys by default; a KMS or
# Vault client in production (recorder/recordings/keys.py says what it implements).
QMS_RECORDING_KEY_PROVIDER = env_str(
    "QMS_RECORDING_KEY_PROVIDER", "recorder.recordings.keys.SettingsKeys"
).strip()

# Capture nodes (docs/deployment.md). This node's name: its worker, started with
# `celery -A qms worker -Q capture.<node>`, runs the sniffers configured for it in the admin.
QMS_NODE = env_str("QMS_NODE", socket.gethostname()).strip()
if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", QMS_NODE):
    raise SettingsError(
        f"QMS_NODE must be letters, digits, '.', '_' and '-' (it names the worker's queue, "
        f"capture.<node>), not {QMS_NODE!r}."
    )
# The node's durable outbox: events captured and not yet applied to the database wait here,
# on local disk, through broker and database outages.
QMS_OUTBOX_DIR = env_directory("QMS_OUTBOX_DIR", VAR_DIR / "outbox")
# How often a node's worker heartbeats its interfaces, and how long its lease on one lasts
# without a heartbeat before another worker may take the interface over.
QMS_CAPTURE_HEARTBEAT_SECONDS = env_int("QMS_CAPTURE_HEARTBEAT_SECONDS", 5, minimum=1, maximum=3600)
QMS_CAPTURE_LEASE_SECONDS = env_int("QMS_CAPTURE_LEASE_SECONDS", 60, minimum=2, maximum=86400)
if QMS_CAPTURE_LEASE_SECONDS <= 2 * QMS_CAPTURE_HEARTBEAT_SECONDS:
    raise SettingsError(
        "QMS_CAPTURE_LEASE_SECONDS must be more than twice QMS_CAPTURE_HEARTBEAT_SECONDS, "
        "or a lease could lapse between two heartbeats."
    )
# Events sent to the broker and not applied this long after are sent again (a broker that
# restarted without persistence forgets its queue).
QMS_OUTBOX_REDELIVER_SECONDS = env_int("QMS_OUTBOX_REDELIVER_SECONDS", 60, minimum=1, maximum=86400)

# Retention (docs/retention.md): days a recording is kept; 0 keeps recordings forever. A
# team's own retention_days overrides it for its agents' recordings.
QMS_RETENTION_DAYS = env_int("QMS_RETENTION_DAYS", 0, minimum=0, maximum=36500)

# Playback (docs/playback.md). Agents hear their own recordings only when this is on.
QMS_AGENTS_HEAR_OWN = env_bool("QMS_AGENTS_HEAR_OWN", False)
# Empty: Django streams the audio itself. Set to nginx's internal location (for example
# /protected-recordings/) to hand the authorized file to nginx with X-Accel-Redirect.
QMS_AUDIO_ACCEL_REDIRECT = env_url_path("QMS_AUDIO_ACCEL_REDIRECT")
# The request header nginx puts the client's address in (X-Real-IP); empty: the socket
# peer. Only set it behind a proxy that overwrites the header, or clients could forge it.
QMS_CLIENT_IP_HEADER = env_header("QMS_CLIENT_IP_HEADER")
# The proxies whose QMS_CLIENT_IP_HEADER is believed (addresses or networks; default: nginx
# on this host). A request from any other peer is that peer's, whatever its headers say.
QMS_TRUSTED_PROXIES = env_networks("QMS_TRUSTED_PROXIES", ["127.0.0.1", "::1"])

# Where recordings live (docs/deployment.md, "Recordings in object storage"): filesystem,
# under QMS_RECORDINGS_DIR, or s3, a bucket of an S3-compatible object store (QMS_S3_*).
# The spools stay on local disk either way.
QMS_RECORDINGS_STORAGE = env_choice(
    "QMS_RECORDINGS_STORAGE", "FILESYSTEM", ["FILESYSTEM", "S3"]
).lower()
if QMS_RECORDINGS_STORAGE == "s3":
    RECORDINGS_STORAGE = env_s3_storage()
    if QMS_AUDIO_ACCEL_REDIRECT:
        raise SettingsError(
            "QMS_AUDIO_ACCEL_REDIRECT hands nginx a file of QMS_RECORDINGS_DIR, and with "
            "QMS_RECORDINGS_STORAGE=s3 there is none: leave it empty (Django streams the audio)."
        )
else:
    RECORDINGS_STORAGE = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": QMS_RECORDINGS_DIR, "base_url": None},
    }

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "recordings": RECORDINGS_STORAGE,
}

# How long a binding learned without an expiry of its own (SCCP, TAPI, a SIP call) stays
# valid without being seen again, in seconds.
QMS_BINDING_DEFAULT_TTL = env_int("QMS_BINDING_DEFAULT_TTL", 3600, minimum=60, maximum=365 * 86400)

# ShoreTel TAPI bridges (docs/tapi-bridge.md): celery beat polls them this often; each
# request may take this long; their line lists are read again this often; the event ids
# kept to recognise duplicates are forgotten after this many days.
QMS_TAPI_POLL_SECONDS = env_int("QMS_TAPI_POLL_SECONDS", 5, minimum=1, maximum=86400)
QMS_TAPI_TIMEOUT_SECONDS = env_int("QMS_TAPI_TIMEOUT_SECONDS", 5, minimum=1, maximum=300)
QMS_TAPI_LINES_SECONDS = env_int("QMS_TAPI_LINES_SECONDS", 600, minimum=10, maximum=86400)
QMS_TAPI_EVENTS_KEEP_DAYS = env_int("QMS_TAPI_EVENTS_KEEP_DAYS", 7, minimum=1, maximum=3650)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "qms.lib.tokens.ExpiringTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # Every list is paginated: PAGE_SIZE rows unless ?page_size= asks for up to 500.
    "DEFAULT_PAGINATION_CLASS": "qms.lib.api.Pagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "qms.lib.api.QMSAutoSchema",
}

# API tokens stop working this many days after they were issued (0: never).
QMS_API_TOKEN_DAYS = env_int("QMS_API_TOKEN_DAYS", 90, minimum=0, maximum=3650)

# Celery: with no broker configured, tasks run in-process (the embedded default).
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = TIME_ZONE
# A capture node's worker hosts its sniffers: it must outlive any broker outage rather than
# exit after a number of reconnection attempts (its outbox holds the events meanwhile).
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# Live listening (docs/playback.md): the Redis that carries calls' live audio from the
# capture nodes to the web tier. The broker's by default when it is Redis; empty turns
# live listening off.
QMS_LIVE_AUDIO_URL = env_redis_url(
    "QMS_LIVE_AUDIO_URL",
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis:", "rediss:", "unix:")) else "",
)
# celery beat. The TAPI poll has its own entry (integrations/shoretel).
CELERY_BEAT_SCHEDULE = {
    "expire-stale-bindings": {
        "task": "extensions.tasks.expire_stale_bindings",
        "schedule": timedelta(minutes=1),
    },
    "sweep-stale-calls": {
        "task": "recorder.tasks.sweep_stale_calls",
        "schedule": timedelta(minutes=1),
    },
    "purge-expired-recordings": {
        "task": "recorder.tasks.purge_expired_recordings",
        "schedule": timedelta(hours=1),
    },
    "end-lapsed-live-listens": {
        "task": "recorder.tasks.end_lapsed_listens",
        "schedule": timedelta(seconds=30),
    },
}

# Production hardening, all on whenever DEBUG is off. nginx terminates TLS in front of
# gunicorn and tells Django so with X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = env_int(
    "SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000, minimum=0, maximum=2 * 31536000
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy on every response (django-csp): script only from QMS's own static
# files, never inline, so an injected <script> or on*= handler would not run even if
# escaping ever failed. Inline style is allowed: Django's admin changelist and DRF's
# browsable API carry style attributes, and style cannot run script.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "media-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", ["DEBUG", "INFO", "WARNING", "ERROR"])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}
