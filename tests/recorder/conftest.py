"""The recordings storage as a bucket of a real S3-compatible server, for the tests that ask
for it (the fixture `s3_recordings`); every other test keeps the filesystem storage."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from django.core.files.storage import storages

from qms.lib.env import env_s3_storage
from tests.recorder.s3 import REGION, S3Server

# Credentials of the test server alone, found by boto3 in the environment as in production.
TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "qms-test", "AWS_SECRET_ACCESS_KEY": "qms-test-secret"}


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3") / "moto.log").start()
    yield server
    server.stop()


@dataclass
class S3Recordings:
    server: S3Server
    bucket: str
    storage: object

    def client(self):
        return boto3.client("s3", endpoint_url=self.server.endpoint, region_name=REGION)

    def object_bytes(self, name: str) -> bytes:
        return self.client().get_object(Bucket=self.bucket, Key=name)["Body"].read()

    def keys(self) -> set[str]:
        listed = self.client().list_objects_v2(Bucket=self.bucket)
        return {entry["Key"] for entry in listed.get("Contents", [])}


def use_bucket(server: S3Server, settings, monkeypatch: pytest.MonkeyPatch) -> S3Recordings:
    """STORAGES["recordings"] pointed at a new bucket of `server`, read from the same
    QMS_S3_* variables an operator sets, and the Recording.file field with it."""
    bucket = f"qms-{uuid.uuid4().hex[:12]}"
    for name, value in TEST_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    # One attempt: a server stopped on purpose is not waited for through boto3's retries.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("QMS_S3_BUCKET", bucket)
    monkeypatch.setenv("QMS_S3_ENDPOINT_URL", server.endpoint)
    monkeypatch.setenv("QMS_S3_REGION", REGION)
    settings.QMS_RECORDINGS_STORAGE = "s3"
    settings.STORAGES = {**settings.STORAGES, "recordings": env_s3_storage()}
    from recorder.models import Recording

    storage = storages["recordings"]
    # The field took its storage when the model was defined: it follows the setting here.
    monkeypatch.setattr(Recording._meta.get_field("file"), "storage", storage)
    recordings = S3Recordings(server, bucket, storage)
    recordings.client().create_bucket(Bucket=bucket)
    return recordings


@pytest.fixture
def s3_recordings(s3_server: S3Server, settings, monkeypatch: pytest.MonkeyPatch) -> S3Recordings:
    return use_bucket(s3_server, settings, monkeypatch)


@pytest.fixture
def own_s3_server(tmp_path: Path) -> Iterator[S3Server]:
    """A server of the test's own, which it may stop and start again."""
    server = S3Server(tmp_path / "moto.log").start()
    yield server
    server.stop()
