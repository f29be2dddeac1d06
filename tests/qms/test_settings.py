"""Settings come from the environment, and a malformed value stops start-up with a sentence
naming the variable (issue 2, section 1)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from qms.lib.env import (
    env_bool,
    env_cache,
    env_choice,
    env_database,
    env_int,
    env_list,
    env_url_path,
    parse_database_url,
)

REPO_ROOT = Path(__file__).resolve().parent.parent.parent

# Every variable qms/settings.py reads, plus the settings module pytest-django exports:
# a start-up test sets the ones it is about and inherits none of the developer's.
SETTINGS_VARIABLES = {
    "DJANGO_SETTINGS_MODULE",
    "QMS_VAR_DIR",
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "DATABASE_URL",
    "TIME_ZONE",
    "QMS_STATIC_ROOT",
    "QMS_RECORDINGS_DIR",
    "QMS_BINDING_DEFAULT_TTL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "LOG_LEVEL",
    "CACHE_URL",
    "QMS_LIVE_AUDIO_URL",
    "QMS_API_TOKEN_DAYS",
    "QMS_LOGIN_FAILURE_LIMIT",
    "QMS_LOGIN_LOCKOUT_MINUTES",
    "QMS_AGENTS_HEAR_OWN",
    "QMS_AUDIO_ACCEL_REDIRECT",
    "QMS_CLIENT_IP_HEADER",
    "QMS_SPOOL_DIR",
    "QMS_OUTBOX_DIR",
    "QMS_RETENTION_DAYS",
    "QMS_TAPI_POLL_SECONDS",
    "QMS_SIGNALLING_BUFFER_MIB",
    "QMS_RECORDINGS_STORAGE",
    "QMS_S3_BUCKET",
    "QMS_S3_ENDPOINT_URL",
    "QMS_S3_REGION",
    "QMS_S3_PREFIX",
    "QMS_S3_ADDRESSING_STYLE",
    "QMS_RECORDING_KEYS",
    "QMS_RECORDING_KEY_ID",
    "QMS_RECORDING_KEY_PROVIDER",
}


def run_manage(var_dir: Path, *args: str, **variables: str) -> subprocess.CompletedProcess:
    """Run manage.py in a fresh interpreter with the real settings module."""
    env = {name: value for name, value in os.environ.items() if name not in SETTINGS_VARIABLES}
    env |= {"DJANGO_SETTINGS_MODULE": "qms.settings", "QMS_VAR_DIR": str(var_dir)} | variables
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# env_bool ----------------------------------------------------------------------------------


@pytest.mark.parametrize("word", ["1", "true", "YES", " on "])
def test_env_bool_reads_the_true_words(monkeypatch: pytest.MonkeyPatch, word: str) -> None:
    monkeypatch.setenv("QMS_TEST_FLAG", word)
    assert env_bool("QMS_TEST_FLAG", False) is True


@pytest.mark.parametrize("word", ["0", "false", "No", "OFF"])
def test_env_bool_reads_the_false_words(monkeypatch: pytest.MonkeyPatch, word: str) -> None:
    monkeypatch.setenv("QMS_TEST_FLAG", word)
    assert env_bool("QMS_TEST_FLAG", True) is False


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_env_bool_falls_back_to_the_default_when_unset_or_blank(
    monkeypatch: pytest.MonkeyPatch, raw: str | None
) -> None:
    if raw is None:
        monkeypatch.delenv("QMS_TEST_FLAG", raising=False)
    else:
        monkeypatch.setenv("QMS_TEST_FLAG", raw)
    assert env_bool("QMS_TEST_FLAG", True) is True
    assert env_bool("QMS_TEST_FLAG", False) is False


def test_env_bool_refuses_another_word_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QMS_TEST_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match=r"^QMS_TEST_FLAG .*'maybe'"):
        env_bool("QMS_TEST_FLAG", False)


# env_int -----------------------------------------------------------------------------------


def test_env_int_reads_a_whole_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QMS_TEST_SECONDS", " 120 ")
    assert env_int("QMS_TEST_SECONDS", 3600, minimum=60) == 120


def test_env_int_falls_back_to_the_default_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QMS_TEST_SECONDS", raising=False)
    assert env_int("QMS_TEST_SECONDS", 3600) == 3600


@pytest.mark.parametrize("raw", ["abc", "1.5", "60s"])
def test_env_int_refuses_what_is_not_a_whole_number_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("QMS_TEST_SECONDS", raw)
    with pytest.raises(ImproperlyConfigured, match=r"^QMS_TEST_SECONDS must be a whole number"):
        env_int("QMS_TEST_SECONDS", 3600)


def test_env_int_refuses_a_value_below_the_minimum_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QMS_TEST_SECONDS", "59")
    with pytest.raises(ImproperlyConfigured, match=r"^QMS_TEST_SECONDS must be at least 60"):
        env_int("QMS_TEST_SECONDS", 3600, minimum=60)


# env_list ----------------------------------------------------------------------------------


def test_env_list_splits_on_commas_and_trims(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QMS_TEST_HOSTS", "qms.example.com, 10.0.0.5")
    assert env_list("QMS_TEST_HOSTS", []) == ["qms.example.com", "10.0.0.5"]


def test_env_list_falls_back_to_the_default_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QMS_TEST_HOSTS", raising=False)
    assert env_list("QMS_TEST_HOSTS", ["localhost"]) == ["localhost"]


@pytest.mark.parametrize("raw", [",,", "qms.example.com,", "a, ,b"])
def test_env_list_refuses_empty_items_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("QMS_TEST_HOSTS", raw)
    with pytest.raises(ImproperlyConfigured, match=r"^QMS_TEST_HOSTS .*without empty items"):
        env_list("QMS_TEST_HOSTS", [])


# env_choice --------------------------------------------------------------------------------


def test_env_choice_accepts_a_choice_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QMS_TEST_LEVEL", "warning")
    assert env_choice("QMS_TEST_LEVEL", "INFO", ["INFO", "WARNING"]) == "WARNING"


def test_env_choice_falls_back_to_the_default_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QMS_TEST_LEVEL", raising=False)
    assert env_choice("QMS_TEST_LEVEL", "INFO", ["INFO", "WARNING"]) == "INFO"


def test_env_choice_refuses_another_value_naming_the_variable_and_the_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QMS_TEST_LEVEL", "loud")
    with pytest.raises(ImproperlyConfigured, match=r"^QMS_TEST_LEVEL must be one of INFO, WARNING"):
        env_choice("QMS_TEST_LEVEL", "INFO", ["INFO", "WARNING"])


# env_cache and env_url_path ---------------------------------------------------------------


def test_env_cache_is_process_memory_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QMS_TEST_CACHE_URL", raising=False)
    assert env_cache("QMS_TEST_CACHE_URL") == {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache"
    }


def test_env_cache_reads_a_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QMS_TEST_CACHE_URL", "redis://127.0.0.1:6379/1")
    assert env_cache("QMS_TEST_CACHE_URL") == {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:6379/1",
        "KEY_PREFIX": "qms",
    }


def test_env_cache_refuses_another_scheme_without_printing_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QMS_TEST_CACHE_URL", "memcached://qms:hunter2@cache:11211")
    with pytest.raises(ImproperlyConfigured, match=r"^QMS_TEST_CACHE_URL must be a Redis URL") as e:
        env_cache("QMS_TEST_CACHE_URL")
    assert "hunter2" not in str(e.value)


@pytest.mark.parametrize("raw", ["protected/", "/protected", "/a/../b/", "//", "/a//b/"])
def test_env_url_path_refuses_what_is_not_a_clean_absolute_path(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("QMS_TEST_PATH", raw)
    with pytest.raises(ImproperlyConfigured, match=r"^QMS_TEST_PATH must be a URL path"):
        env_url_path("QMS_TEST_PATH")


def test_env_url_path_reads_an_internal_location(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QMS_TEST_PATH", " /protected-recordings/ ")
    assert env_url_path("QMS_TEST_PATH") == "/protected-recordings/"
    monkeypatch.delenv("QMS_TEST_PATH")
    assert env_url_path("QMS_TEST_PATH") == ""


# env_database / parse_database_url ---------------------------------------------------------


def test_a_postgres_url_gives_every_connection_setting() -> None:
    database = parse_database_url(
        "postgres://qms:s%40cret@db.example.com:5433/qms_prod?sslmode=require"
    )
    assert database == {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "qms_prod",
        "USER": "qms",
        "PASSWORD": "s@cret",
        "HOST": "db.example.com",
        "PORT": "5433",
        "OPTIONS": {"sslmode": "require"},
        "CONN_MAX_AGE": 60,
    }


@pytest.mark.parametrize("scheme", ["postgresql", "pgsql"])
def test_the_other_postgres_schemes_mean_postgres(scheme: str) -> None:
    database = parse_database_url(f"{scheme}://postgres@127.0.0.1/qms")
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["USER"], database["HOST"], database["PORT"]) == ("postgres", "127.0.0.1", "")


def test_a_sqlite_url_with_three_slashes_is_a_relative_path() -> None:
    assert parse_database_url("sqlite:///var/qms.sqlite3") == {
        "ENGINE": "qms.lib.sqlite3",
        "NAME": "var/qms.sqlite3",
        "OPTIONS": {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
        },
    }


def test_a_sqlite_url_with_four_slashes_is_an_absolute_path() -> None:
    assert parse_database_url("sqlite:////srv/qms/qms.sqlite3")["NAME"] == "/srv/qms/qms.sqlite3"


def test_a_sqlite_url_may_name_the_in_memory_database() -> None:
    assert parse_database_url("sqlite:///:memory:")["NAME"] == ":memory:"


def test_env_database_reads_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QMS_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/qms")
    database = env_database("QMS_TEST_DATABASE_URL", "sqlite:///unused.sqlite3")
    assert (database["NAME"], database["PORT"]) == ("qms", "5432")


def test_env_database_falls_back_to_the_default_when_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("QMS_TEST_DATABASE_URL", raising=False)
    database = env_database("QMS_TEST_DATABASE_URL", "sqlite:///var/qms.sqlite3")
    assert database["NAME"] == "var/qms.sqlite3"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("mysql://qms@db/qms", "the scheme must be one of pgsql, postgres, postgresql, sqlite"),
        ("qms.sqlite3", "the scheme must be one of"),
        ("postgres://qms@db:five/qms", "the port must be a number from 1 to 65535"),
        ("postgres://qms@db:5432", "the URL must end with the database name"),
        ("postgres://qms@db:5432/", "the URL must end with the database name"),
        ("sqlite://", "a SQLite URL needs a file name"),
    ],
)
def test_env_database_refuses_an_unusable_url_naming_the_variable_and_the_reason(
    monkeypatch: pytest.MonkeyPatch, url: str, reason: str
) -> None:
    monkeypatch.setenv("QMS_TEST_DATABASE_URL", url)
    with pytest.raises(ImproperlyConfigured) as refusal:
        env_database("QMS_TEST_DATABASE_URL", "sqlite:///unused.sqlite3")
    message = str(refusal.value)
    assert message.startswith("QMS_TEST_DATABASE_URL is not a usable database URL")
    assert reason in message


def test_env_database_refusal_does_not_print_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The message goes to the terminal, the journal and CI logs; the operator needs the
    # shape of the URL to find the mistake, never the database password.
    monkeypatch.setenv("QMS_TEST_DATABASE_URL", "postgres://qms:hunter2@db:five/qms")
    with pytest.raises(ImproperlyConfigured) as refusal:
        env_database("QMS_TEST_DATABASE_URL", "sqlite:///unused.sqlite3")
    message = str(refusal.value)
    assert "hunter2" not in message
    assert "postgres://qms:***@db:five/qms" in message


def test_parse_database_url_raises_value_error_for_the_reader_to_name() -> None:
    with pytest.raises(ValueError, match="the port must be a number from 1 to 65535"):
        parse_database_url("postgres://qms@db:99999/qms")


# Start-up ----------------------------------------------------------------------------------


def test_live_audio_goes_through_the_broker_s_redis_unless_told_otherwise(tmp_path: Path) -> None:
    show = "from django.conf import settings; print(repr(settings.QMS_LIVE_AUDIO_URL))"

    def shown(**variables: str) -> str:
        return run_manage(tmp_path, "shell", "-c", show, **variables).stdout.splitlines()[-1]

    broker = {"DEBUG": "1", "CELERY_BROKER_URL": "redis://broker:6379/0"}
    assert shown(**broker) == "'redis://broker:6379/0'"
    assert shown(**broker, QMS_LIVE_AUDIO_URL="redis://relay:6379/2") == "'redis://relay:6379/2'"
    assert shown(DEBUG="1") == "''"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEBUG", "maybe"),
        ("DATABASE_URL", "mysql://x"),
        ("QMS_BINDING_DEFAULT_TTL", "abc"),
        ("QMS_BINDING_DEFAULT_TTL", "30"),
        ("ALLOWED_HOSTS", ",,"),
        ("LOG_LEVEL", "loud"),
        ("CACHE_URL", "memcached://cache:11211"),
        ("QMS_LIVE_AUDIO_URL", "http://relay:6379"),
        ("QMS_API_TOKEN_DAYS", "-1"),
        ("QMS_AGENTS_HEAR_OWN", "sometimes"),
        ("QMS_AUDIO_ACCEL_REDIRECT", "protected"),
        ("QMS_LOGIN_FAILURE_LIMIT", "0"),
        ("QMS_SIGNALLING_BUFFER_MIB", "1"),
    ],
)
def test_start_up_stops_on_a_malformed_value_naming_the_variable(
    tmp_path: Path, variable: str, value: str
) -> None:
    variables = {"DEBUG": "1", variable: value}
    result = run_manage(tmp_path, "check", **variables)
    assert result.returncode != 0, result.stdout
    assert result.stderr.startswith(f"{variable} ")
    assert value in result.stderr


def test_start_up_with_debug_off_and_no_secret_key_stops_naming_secret_key(
    tmp_path: Path,
) -> None:
    result = run_manage(tmp_path, "check", DEBUG="0", ALLOWED_HOSTS="qms.example.com")
    assert result.returncode != 0, result.stdout
    assert result.stderr.startswith("SECRET_KEY must be set when DEBUG is off")


def test_start_up_with_good_settings_passes_the_plain_check(tmp_path: Path) -> None:
    result = run_manage(tmp_path, "check", DEBUG="1")
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_a_production_configuration_passes_the_deployment_check_without_warnings(
    tmp_path: Path,
) -> None:
    result = run_manage(
        tmp_path,
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="qms.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_a_unix_socket_directory_is_decoded_as_the_host() -> None:
    config = parse_database_url("postgres://postgres@%2Fvar%2Frun%2Fpostgresql/qms")
    assert config["HOST"] == "/var/run/postgresql"


# One sentence, no traceback, for every bad value (audit L4) --------------------------------

BAD_VALUES = [
    ("DATABASE_URL", "postgres://qms:hunter2@[::1/qms"),
    ("CACHE_URL", "redis://[bad"),
    ("TIME_ZONE", "Mars/Olympus"),
    ("DATABASE_URL", "sqlite:///{tmp}/a-file/qms.sqlite3"),
    ("DATABASE_URL", "sqlite:////proc/qms/qms.sqlite3"),
    ("QMS_VAR_DIR", "/proc/x"),
    ("QMS_BINDING_DEFAULT_TTL", "999999999999999999999"),
    ("QMS_RETENTION_DAYS", str(10**21)),
    ("QMS_RETENTION_DAYS", "3000000"),
    ("QMS_LOGIN_LOCKOUT_MINUTES", str(10**21)),
    ("QMS_TAPI_POLL_SECONDS", str(10**21)),
    ("QMS_CLIENT_IP_HEADER", "X Real IP"),
    ("QMS_RECORDINGS_DIR", "/dev/null"),
]


@pytest.mark.parametrize(("variable", "value"), BAD_VALUES)
def test_a_bad_value_stops_start_up_with_one_sentence_naming_it_and_no_traceback(
    tmp_path: Path, variable: str, value: str
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    result = run_manage(tmp_path, "check", DEBUG="1", **{variable: value.format(tmp=tmp_path)})
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output
    assert output.startswith(f"{variable} ") and output.count("\n") == 1, output
    assert "hunter2" not in output


# Recordings in a bucket (issue 15, section 2) -----------------------------------------------

A_BUCKET = {"QMS_RECORDINGS_STORAGE": "s3", "QMS_S3_BUCKET": "qms-archive"}
BAD_S3_SETTINGS = [
    ("QMS_RECORDINGS_STORAGE", {"QMS_RECORDINGS_STORAGE": "nfs"}),
    ("QMS_S3_BUCKET", {"QMS_RECORDINGS_STORAGE": "s3"}),
    ("QMS_S3_BUCKET", {**A_BUCKET, "QMS_S3_BUCKET": "Recordings_2026"}),
    ("QMS_S3_ENDPOINT_URL", {**A_BUCKET, "QMS_S3_ENDPOINT_URL": "minio:9000"}),
    ("QMS_S3_ENDPOINT_URL", {**A_BUCKET, "QMS_S3_ENDPOINT_URL": "http://minio:port"}),
    ("QMS_S3_REGION", {**A_BUCKET, "QMS_S3_REGION": "EU West"}),
    ("QMS_S3_PREFIX", {**A_BUCKET, "QMS_S3_PREFIX": "qms/../other"}),
    ("QMS_S3_ADDRESSING_STYLE", {**A_BUCKET, "QMS_S3_ADDRESSING_STYLE": "dns"}),
    ("QMS_AUDIO_ACCEL_REDIRECT", {**A_BUCKET, "QMS_AUDIO_ACCEL_REDIRECT": "/protected/"}),
]


@pytest.mark.parametrize(("variable", "variables"), BAD_S3_SETTINGS)
def test_a_bad_bucket_setting_stops_start_up_naming_it(
    tmp_path: Path, variable: str, variables: dict[str, str]
) -> None:
    result = run_manage(tmp_path, "check", DEBUG="1", **variables)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output
    assert output.startswith(f"{variable} ") and output.count("\n") == 1, output


def test_the_recordings_storage_is_the_bucket_when_so_configured(tmp_path: Path) -> None:
    show = (
        "from django.core.files.storage import storages; s = storages['recordings']; "
        "print(type(s).__name__, s.bucket_name, s.endpoint_url, s.region_name, s.location, "
        "s.file_overwrite)"
    )
    result = run_manage(
        tmp_path, "shell", "-c", show, DEBUG="1", **A_BUCKET,
        QMS_S3_ENDPOINT_URL="http://127.0.0.1:9000", QMS_S3_REGION="eu-west-1",
        QMS_S3_PREFIX="/site-a/recordings/",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split() == [
        "RecordingsBucket", "qms-archive", "http://127.0.0.1:9000", "eu-west-1",
        "site-a/recordings", "True",
    ]  # fmt: skip


def test_the_recordings_storage_is_the_folder_by_default(tmp_path: Path) -> None:
    show = "from django.core.files.storage import storages; print(storages['recordings'].location)"
    result = run_manage(tmp_path, "shell", "-c", show, DEBUG="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == str(tmp_path / "recordings")


def test_a_short_secret_key_is_refused_with_debug_off(tmp_path: Path) -> None:
    result = run_manage(
        tmp_path, "check", DEBUG="0", SECRET_KEY="x", ALLOWED_HOSTS="qms.example.com"
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output
    assert output.startswith("SECRET_KEY is too short")


def test_a_celery_worker_with_a_bad_value_prints_the_sentence_alone(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if name not in SETTINGS_VARIABLES}
    env.update(DEBUG="1", QMS_VAR_DIR=str(tmp_path), TIME_ZONE="Mars/Olympus")
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "qms", "worker", "--pool", "solo"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output
    assert output.startswith("TIME_ZONE must be a time zone")


def test_the_wsgi_application_with_a_bad_value_exits_for_gunicorn_to_stop(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if name not in SETTINGS_VARIABLES}
    env.update(DEBUG="1", QMS_VAR_DIR=str(tmp_path), QMS_RECORDINGS_DIR="/dev/null")
    result = subprocess.run(
        [sys.executable, "-c", "import qms.wsgi"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("QMS_RECORDINGS_DIR needs '/dev/null' to be a directory")
