"""The QMS admin site: Django admin plus the directory health page."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models.base import ModelBase
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from extensions.access import sees_directory_health
from extensions.health import directory_health
from qms.lib.login_throttle import is_locked, lockout_message


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin login, saying plainly when too many failures have locked it."""

    def clean(self) -> dict:
        username = self.cleaned_data.get("username")
        if username and is_locked(username, self.request):
            raise forms.ValidationError(lockout_message(), code="locked")
        return super().clean()


class BoundedDateChangeList(ChangeList):
    """Django's date drill-down turns ?started_at__year=99999999999 into an OverflowError
    and ?started_at__year=9999 into a ValueError for year 10000 (a 500 each); here they are
    refused like any other bad filter (the list again, with a note)."""

    def get_filters(self, request: HttpRequest) -> tuple:
        try:
            return super().get_filters(request)
        except (OverflowError, ValueError) as error:
            raise IncorrectLookupParameters(error) from None


class BoundedDates:
    """A ModelAdmin mixin: the changelist is BoundedDateChangeList."""

    def get_changelist(self, request: HttpRequest, **kwargs: object) -> type[ChangeList]:
        return BoundedDateChangeList


def health_page(request: HttpRequest) -> int:
    """The page of directory health asked for; the first for anything but a page number."""
    asked = request.GET.get("page", "")
    return int(asked) if asked.isdecimal() and len(asked) < 10 else 1


class QMSAdminSite(admin.AdminSite):
    site_header = "QMS administration"
    site_title = "QMS"
    index_title = "Directory and recordings"
    index_template = "admin/qms_index.html"
    login_form = ThrottledAdminAuthenticationForm

    def register(
        self,
        model_or_iterable: ModelBase | list[ModelBase],
        admin_class: type[admin.ModelAdmin] | None = None,
        **options: object,
    ) -> None:
        # Every app's admin gets the bounded date drill-down, without each one having to
        # remember it (an admin registered with date_hierarchy would otherwise answer 500).
        base = admin_class or admin.ModelAdmin
        bounded = type(base.__name__, (BoundedDates, base), {"__module__": base.__module__})
        super().register(model_or_iterable, bounded, **options)

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "directory-health/",
                self.admin_view(self.directory_health_view),
                name="directory_health",
            ),
        ]
        return own + super().get_urls()

    def index(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        # The index links the health page only for those it opens to.
        allowed = sees_directory_health(request.user)
        return super().index(request, {**(extra_context or {}), "sees_directory_health": allowed})

    def directory_health_view(self, request: HttpRequest) -> HttpResponse:
        # Staff alone is not enough: the page is the whole directory (recorder/playback/access.py).
        if not sees_directory_health(request.user):
            raise PermissionDenied("Directory health is for telephony admins.")
        context = {
            **self.each_context(request),
            "title": "Directory health",
            "health": directory_health(health_page(request)),
        }
        return TemplateResponse(request, "admin/directory_health.html", context)
