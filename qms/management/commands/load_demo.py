"""python manage.py load_demo: a small directory to look around in, with logins."""

from __future__ import annotations

import io
import secrets
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import Group, Permission, User
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from extensions.directory_import import import_directory
from extensions.models import Agent, Team
from extensions.services import apply_binding
from integrations.observations import BindingSeen, BindingSource
from qms.demo.capture import write_demo_capture
from recorder.models import EvaluationForm, FormSection, Question, Recording

DEMO_DIRECTORY = Path(__file__).resolve().parents[2] / "demo" / "directory.csv"
# Where `make demo` serves QMS (Makefile: runserver 127.0.0.1:8000).
DEMO_URL = "http://127.0.0.1:8000/"
TEAMS = {"Sales": ["John", "Mary", "Erik"], "Support": ["Carl", "Dana", "Fiona", "Gus"]}
# The roles of docs/playback.md ("Roles"). A supervisor's view permissions open the admin's
# directory pages, whose rows are still only their teams' (recorder/playback/access.py); seeing
# every team's rows takes a model's change permission, which only telephony admins hold.
SUPERVISOR_PERMISSIONS = [
    "view_agent",
    "view_team",
    "view_extension",
    "view_phone",
    "view_lineappearance",
    "view_binding",
    "view_seenextension",
    "view_bindingconflict",
    "view_call",
    "view_recording",
    "download_recording",
    "add_recordingflag",
    "add_recordingnote",
    "listen_live",
    "add_evaluation",
]
# Telephony admins keep the directory and the TAPI bridges: every permission of those apps.
TELEPHONY_ADMIN_APPS = ["extensions", "shoretel"]

# The demo's evaluation form: (section, [(question, kind, scale top, weight, N/A, fail-all)]).
DEMO_FORM = "Call quality"
DEMO_QUESTIONS = [
    ("Opening", [
        ("Greets the caller and gives their name", "yes_no", 5, 1, False, False),
        ("Verifies the caller's identity before discussing the account", "yes_no", 5, 0,
         True, True),
    ]),
    ("Handling", [
        ("Listens and shows empathy", "scale", 5, 2, False, False),
        ("Resolves the request or says what happens next", "scale", 5, 3, False, False),
        ("Offers further help", "yes_no", 5, 1, True, False),
    ]),
]  # fmt: skip

# What the wire "said" over the last hour: phones registering, John moving to the desk
# phone for a while (extension mobility), and a number the PBX sends in long form.
SIGHTINGS = [
    (60, "9001", "10.20.0.11", BindingSource.SCCP, "SEP001122334455", 1),
    (59, "9002", "10.20.0.12", BindingSource.SCCP, "SEP0011223344AA", 1),
    (58, "9003", "10.20.0.13", BindingSource.SCCP, "SEP0011223344BB", 1),
    (50, "9005", "10.20.0.21", BindingSource.SIP_REGISTER, "", None),
    (45, "reception", "10.20.0.22", BindingSource.SIP_REGISTER, "", None),
    (30, "9001", "10.20.0.21", BindingSource.SIP_CALL, "", None),
    (10, "9001", "10.20.0.11", BindingSource.SCCP, "SEP001122334455", 1),
    (5, "6175559004", "10.20.0.14", BindingSource.SIP_REGISTER, "", None),
]


class Command(BaseCommand):
    help = "Load the demo directory (John, Mary, Carl and friends) and print fresh logins."

    def handle(self, *args: object, **options: object) -> None:
        with transaction.atomic(), open(DEMO_DIRECTORY, newline="") as export:
            import_directory(export)
            self.make_teams()
            self.replay_sightings()
            self.make_evaluation_form()
            admin_password, supervisor_password = self.make_logins()
        self.record_demo_calls()
        # Recordings made before waveforms were computed at finalisation get theirs now.
        call_command("compute_peaks", stdout=io.StringIO())
        teams = self.supervise_recorded_teams()
        self.stdout.write("Demo directory loaded. Logins (new passwords at every run):")
        self.stdout.write(f"  {'admin':<11} password {admin_password}   (administrator)")
        self.stdout.write(
            f"  {'supervisor':<11} password {supervisor_password}   "
            f"(supervisor of {', '.join(teams) or 'no team'})"
        )
        self.stdout.write(
            f"Open {DEMO_URL} and log in as supervisor to search and play the demo "
            f"recordings; the admin is at {DEMO_URL}admin/."
        )

    def record_demo_calls(self) -> None:
        """Capture three demo calls, the way a capture node would, into real recordings."""
        if Recording.objects.filter(call_id__startswith="demo-").exists():
            return
        capture = Path(settings.QMS_SPOOL_DIR).parent / "demo" / "demo-calls.pcap"
        write_demo_capture(capture, timezone.now().timestamp())
        call_command("import_pcap", str(capture), node="demo", stdout=io.StringIO())
        recorded = Recording.objects.filter(call_id__startswith="demo-").count()
        self.stdout.write(f"Demo calls captured: {recorded} recordings with audio.")

    def make_teams(self) -> None:
        for name, members in TEAMS.items():
            team, _ = Team.objects.get_or_create(name=name)
            team.agents.set(Agent.objects.filter(name__in=members))

    def make_evaluation_form(self) -> None:
        """A form for the demo supervisor to score the demo calls with, made once."""
        if EvaluationForm.objects.filter(name=DEMO_FORM).exists():
            return
        form = EvaluationForm.objects.create(
            name=DEMO_FORM, description="Made by load_demo: change it in the admin."
        )
        for order, (title, questions) in enumerate(DEMO_QUESTIONS, start=1):
            section = FormSection.objects.create(form=form, order=order, title=title)
            for number, (text, kind, top, weight, na, fail_all) in enumerate(questions, 1):
                Question.objects.create(
                    section=section, order=number, text=text, kind=kind, scale_max=top,
                    weight=weight, allows_na=na, fail_all=fail_all,
                )  # fmt: skip

    def replay_sightings(self) -> None:
        now = timezone.now()
        for minutes_ago, number, ip, source, device, line in SIGHTINGS:
            apply_binding(
                BindingSeen(
                    extension=number,
                    ip=ip,
                    source=source,
                    seen_at=now - timedelta(minutes=minutes_ago),
                    expires_in=7200,
                    device=device,
                    line_number=line,
                )
            )

    def make_logins(self) -> tuple[str, str]:
        admin_password = self.reset_user("admin", superuser=True)
        supervisors, _ = Group.objects.get_or_create(name="Supervisors")
        supervisors.permissions.set(Permission.objects.filter(codename__in=SUPERVISOR_PERMISSIONS))
        supervisor_password = self.reset_user("supervisor", superuser=False)
        User.objects.get(username="supervisor").groups.add(supervisors)
        telephony_admins, _ = Group.objects.get_or_create(name="Telephony admins")
        telephony_admins.permissions.set(
            Permission.objects.filter(content_type__app_label__in=TELEPHONY_ADMIN_APPS)
        )
        return admin_password, supervisor_password

    def supervise_recorded_teams(self) -> list[str]:
        """The demo supervisor supervises the teams of the agents the demo calls recorded,
        so that every demo recording is on their list."""
        supervisor = User.objects.get(username="supervisor")
        teams = Team.objects.filter(agents__recordings__call_id__startswith="demo-").distinct()
        supervisor.supervised_teams.add(*teams)
        return list(supervisor.supervised_teams.order_by("name").values_list("name", flat=True))

    @staticmethod
    def reset_user(username: str, superuser: bool) -> str:
        # A new random password at every run: QMS ships no default credentials.
        password = secrets.token_urlsafe(12)
        user, _ = User.objects.get_or_create(username=username)
        user.is_staff = True
        user.is_superuser = superuser
        user.set_password(password)
        user.save()
        return password
