"""API tokens expire (QMS_API_TOKEN_DAYS, 90 by default): a key that leaked with a script
stops working by itself, with a sentence that says when and what to do; 0 keeps keys for
ever, as DRF's own."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import override_settings
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def issued(days_ago: float) -> APIClient:
    user = User.objects.create_user(f"script-{days_ago}", password="a-long-test-password-1")
    token = Token.objects.create(user=user)
    Token.objects.filter(pk=token.pk).update(created=timezone.now() - timedelta(days=days_ago))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def test_a_token_within_its_days_acts_as_its_user() -> None:
    assert issued(89).get("/api/recordings/").status_code == 200


def test_a_token_past_its_days_is_refused_saying_when_it_expired() -> None:
    response = issued(91).get("/api/recordings/")
    # DRF answers 403, not 401, when session login comes first (no WWW-Authenticate).
    assert response.status_code == 403
    expired = (timezone.now() - timedelta(days=1)).date().isoformat()
    assert response.json()["detail"] == (
        f"This API token expired on {expired} (tokens last 90 days): ask an administrator "
        "for a new one (manage.py drf_create_token -r <username>)."
    )


def test_the_days_are_a_setting_and_zero_means_never() -> None:
    old = issued(400)
    with override_settings(QMS_API_TOKEN_DAYS=0):
        assert old.get("/api/recordings/").status_code == 200
    with override_settings(QMS_API_TOKEN_DAYS=7):
        assert issued(8).get("/api/recordings/").status_code == 403
        assert issued(6).get("/api/recordings/").status_code == 200


def test_a_replaced_token_starts_its_days_again() -> None:
    client = issued(120)
    token = Token.objects.get()
    token.delete()  # what drf_create_token -r does: a new key, created now
    fresh = Token.objects.create(user=token.user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {fresh.key}")
    assert client.get("/api/recordings/").status_code == 200
