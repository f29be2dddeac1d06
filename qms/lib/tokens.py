"""API keys that expire: DRF's token authentication, which the settings name (a module of
its own: DRF imports its authentication classes while its schema module is loading)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed


class ExpiringTokenAuthentication(TokenAuthentication):
    """DRF's token authentication, with keys that expire QMS_API_TOKEN_DAYS after they were
    issued (0: never). A key is a password that a script keeps on disk: one that leaked
    stops working by itself, and `drf_create_token -r` issues the next."""

    def authenticate_credentials(self, key: str) -> tuple:
        user, token = super().authenticate_credentials(key)
        days = settings.QMS_API_TOKEN_DAYS
        if days and token.created < timezone.now() - timedelta(days=days):
            expired = (token.created + timedelta(days=days)).date().isoformat()
            raise AuthenticationFailed(
                f"This API token expired on {expired} (tokens last {days} days): ask an "
                "administrator for a new one (manage.py drf_create_token -r <username>)."
            )
        return user, token
