"""What a seek into a one-hour encrypted recording costs: issue 16 §2's "within 50 ms".

    QMS_VAR_DIR=/tmp/bx-crypt DEBUG=0 SECRET_KEY=... .venv/bin/python bench/seek_sealed.py

Makes a one-hour stereo 8 kHz WAV (115 MB) of noise, stores it once plain and once sealed
under a bench key, then asks the audio view (Django's test client, the whole stack but the
socket: authentication, the access query, the audit entry, the decryption) for a Range in
the middle of each, --requests times, alternating the two. Prints the median and the 95th
percentile of the time until the response's first 64 KiB are in hand, for an open-ended
range (what a browser's seek asks, bytes=N-) and for a 64 KiB one.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_KEYS = "bench:" + base64.b64encode(b"qms bench master key, not secret").decode()
os.environ.setdefault("QMS_RECORDING_KEYS", BENCH_KEYS)
os.environ.setdefault("ALLOWED_HOSTS", "testserver")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")

HOUR_FRAMES = 3600 * 8000
FRAME_BYTES = 4


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    arguments = parser.parse_args()
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qms.settings")
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    plain, sealed, user = _recordings()
    from django.test import Client

    client = Client()
    client.force_login(user)
    middle = plain.size // 2 + 12345
    for label, header in (("bytes=N- (a seek)", f"bytes={middle}-"),
                          ("bytes=N-N+64KiB", f"bytes={middle}-{middle + 65535}")):  # fmt: skip
        timings = {"plain": [], "sealed": []}
        for _ in range(arguments.requests):
            for kind, recording in (("plain", plain), ("sealed", sealed)):
                timings[kind].append(_first_bytes(client, recording, header))
        for kind, values in timings.items():
            values.sort()
            print(
                f"{label:18} {kind:6}: median {statistics.median(values) * 1000:6.2f} ms, "
                f"p95 {values[int(len(values) * 0.95)] * 1000:6.2f} ms, "
                f"{len(values)} requests"
            )


def _first_bytes(client, recording, header: str) -> float:
    started = time.perf_counter()
    response = client.get(f"/recordings/{recording.pk}/audio", HTTP_RANGE=header)
    content = iter(response.streaming_content)
    got = 0
    while got < 65536:
        got += len(next(content))
    elapsed = time.perf_counter() - started
    assert response.status_code == 206, response.status_code
    response.close()
    return elapsed


def _recordings():
    import hashlib
    from datetime import UTC, datetime

    from django.contrib.auth.models import User
    from django.core.files.base import ContentFile

    from recorder.media.sealed import Sealing
    from recorder.models import Recording
    from recorder.recordings.keys import SettingsKeys

    user = User.objects.filter(username="bench").first()
    if user is None:
        # Logged in by force_login: the account has no usable password.
        user = User.objects.create_superuser("bench", password=None)
    wav = _hour_wav()
    sealed_bytes = _sealed(wav, Sealing(SettingsKeys(), "bench"))
    rows = []
    for kind, content, key_id in (("plain", wav, ""), ("sealed", sealed_bytes, "bench")):
        Recording.objects.filter(call_id=f"bench-hour-{kind}").delete()
        row = Recording.objects.create(
            call_id=f"bench-hour-{kind}", started_at=datetime(2026, 1, 1, tzinfo=UTC),
            duration_seconds=3600, status=Recording.Status.COMPLETE, size=len(wav),
            sha256=hashlib.sha256(wav).hexdigest(), encryption_key_id=key_id,
        )  # fmt: skip
        row.file.storage.delete(f"bench/hour-{kind}.wav")
        row.file.save(f"bench/hour-{kind}.wav", ContentFile(content), save=True)
        rows.append(row)
    return rows[0], rows[1], user


def _hour_wav() -> bytes:
    import struct

    data = os.urandom(HOUR_FRAMES * FRAME_BYTES)
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(data), b"WAVE", b"fmt ", 16, 1, 2, 8000,
        8000 * FRAME_BYTES, FRAME_BYTES, 16, b"data", len(data),
    )  # fmt: skip
    return header + data


def _sealed(plain: bytes, sealing) -> bytes:
    import io

    out = io.BytesIO()
    writer = sealing.writer(out, len(plain))
    writer.write(plain)
    writer.finish()
    return out.getvalue()


if __name__ == "__main__":
    main()
