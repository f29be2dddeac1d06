"""Admin base classes every app's admin shares. Imports no app."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest


class ReadOnlyAdmin(admin.ModelAdmin):
    """History and wire facts are written by QMS alone; people only read them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ClearableReadOnlyAdmin(ReadOnlyAdmin):
    """Facts QMS alone writes, which a person who holds the delete permission may clear
    once looked at (parked events, capture alerts, disputed claims)."""

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return admin.ModelAdmin.has_delete_permission(self, request, obj)
