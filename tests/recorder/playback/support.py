"""A small directory with two teams, logins for every role, and recordings with real WAV
audio in the recordings storage: the ground the playback tests stand on."""

from __future__ import annotations

import hashlib
import io
import math
import struct
import wave
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.contrib.auth.models import Permission, User
from django.core.files.base import ContentFile

from extensions.models import Agent, Extension, Team
from recorder.models import Recording

PASSWORD = "a-long-test-password-1"
STARTED = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


@dataclass
class PlaybackWorld:
    admin: User
    supervisor_a: User
    supervisor_b: User
    agent: User  # John's own login; John is an agent of team A.
    outsider: User  # Logged in, supervises nothing, is no agent.
    sales: Team
    support: Team
    john: Agent
    mary: Agent
    carl: Agent
    recording_a: Recording  # John on his extension 9001: team A's.
    recording_b: Recording  # Carl on his extension 9003: team B's.
    # Carl took a call on Mary's 9002 (line 2 of his phone): team B's by the person,
    # team A's by the extension.
    recording_on_marys_line: Recording
    audio: bytes  # The WAV of recording_a and recording_on_marys_line.


def file_name(recording: Recording) -> str:
    """The stored file's own name (the storage adds a suffix when a name is taken)."""
    return recording.file.name.rsplit("/", 1)[-1]


def tone_wav(frames: int = 1000, rate: int = 8000) -> bytes:
    """A real 16-bit mono WAV of a 440 Hz tone: 44 bytes of header, 2 bytes a frame."""
    samples = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / rate))) for n in range(frames)
    )
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples)
    return buffer.getvalue()


def login(username: str, *permissions: str, superuser: bool = False) -> User:
    if superuser:
        return User.objects.create_superuser(username, password=PASSWORD)
    user = User.objects.create_user(username, password=PASSWORD)
    user.user_permissions.set(Permission.objects.filter(codename__in=permissions))
    return user


def recording(call_id: str, agent: Agent, extension: str, audio: bytes, minutes: int) -> Recording:
    row = Recording.objects.create(
        call_id=call_id,
        started_at=STARTED + timedelta(minutes=minutes),
        duration_seconds=0.125,
        direction="inbound",
        extension=extension,
        agent=agent,
        remote_party="6175551212",
        codec="PCMU",
        status=Recording.Status.COMPLETE,
        size=len(audio),
        sha256=hashlib.sha256(audio).hexdigest(),
    )
    row.file.save(f"2026/03/02/{call_id}.wav", ContentFile(audio), save=True)
    return row


def build_world() -> PlaybackWorld:
    admin = login("boss", superuser=True)
    supervisor_a = login("sales-lead")
    supervisor_b = login("support-lead")
    agent = login("john")
    outsider = login("visitor")
    sales = Team.objects.create(name="Sales")
    support = Team.objects.create(name="Support")
    sales.supervisors.add(supervisor_a)
    support.supervisors.add(supervisor_b)
    john = Agent.objects.create(name="John", user=agent)
    mary = Agent.objects.create(name="Mary")
    carl = Agent.objects.create(name="Carl")
    john.teams.add(sales)
    mary.teams.add(sales)
    carl.teams.add(support)
    Extension.objects.create(number="9001", agent=john)
    Extension.objects.create(number="9002", agent=mary)
    Extension.objects.create(number="9003", agent=carl)
    audio = tone_wav()
    return PlaybackWorld(
        admin=admin,
        supervisor_a=supervisor_a,
        supervisor_b=supervisor_b,
        agent=agent,
        outsider=outsider,
        sales=sales,
        support=support,
        john=john,
        mary=mary,
        carl=carl,
        recording_a=recording("call-a", john, "9001", audio, minutes=0),
        recording_b=recording("call-b", carl, "9003", tone_wav(frames=600), minutes=1),
        recording_on_marys_line=recording("call-a2", carl, "9002", audio, minutes=2),
        audio=audio,
    )


# Who sees a recording of team A: (role in PlaybackWorld, QMS_AGENTS_HEAR_OWN, sees it).
WHO_SEES_TEAM_A = [
    ("admin", False, True),
    ("supervisor_a", False, True),
    ("supervisor_b", False, False),
    ("agent", True, True),
    ("agent", False, False),
    ("outsider", True, False),
]
