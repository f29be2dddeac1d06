"""The QMS admin site: Django admin plus the directory health page."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from extensions.health import directory_health
from qms.login_throttle import is_locked, lockout_message


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin login, saying plainly when too many failures have locked it."""

    def clean(self) -> dict:
        username = self.cleaned_data.get("username")
        if username and is_locked(username, self.request):
            raise forms.ValidationError(lockout_message(), code="locked")
        return super().clean()


class QMSAdminSite(admin.AdminSite):
    site_header = "QMS administration"
    site_title = "QMS"
    index_title = "Directory and recordings"
    index_template = "admin/qms_index.html"
    login_form = ThrottledAdminAuthenticationForm

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "directory-health/",
                self.admin_view(self.directory_health_view),
                name="directory_health",
            ),
        ]
        return own + super().get_urls()

    def directory_health_view(self, request: HttpRequest) -> HttpResponse:
        context = {
            **self.each_context(request),
            "title": "Directory health",
            "health": directory_health(),
        }
        return TemplateResponse(request, "admin/directory_health.html", context)
