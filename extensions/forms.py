"""Forms for the admin: lines are typed as the PBX writes them, not picked from a list."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.forms.models import BaseInlineFormSet

from extensions.models import Extension, LineAppearance
from extensions.services import stored_extension
from extensions.validators import validate_extension_number


class LineAppearanceForm(forms.ModelForm):
    """A line with its extension typed in; a new number becomes a new extension."""

    number = forms.CharField(
        label="Extension",
        max_length=64,
        strip=False,
        validators=[validate_extension_number],
        help_text="Exactly as the PBX writes it.",
    )

    class Meta:
        model = LineAppearance
        fields = ["line_number"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.extension_id is not None:
            self.fields["number"].initial = self.instance.extension.number

    def clean(self) -> dict:
        cleaned = super().clean()
        number = cleaned.get("number")
        if number is not None:
            existing = Extension.objects.filter(number=number).first()
            self.instance._pending_extension = existing or Extension(number=number)
            self.instance.checked_by_formset = True
        return cleaned

    def _update_errors(self, errors: ValidationError) -> None:
        # The model names the extension; on this form it is the typed number.
        if hasattr(errors, "error_dict") and "extension" in errors.error_dict:
            errors.error_dict.setdefault("number", []).extend(errors.error_dict.pop("extension"))
        super()._update_errors(errors)

    def save(self, commit: bool = True) -> LineAppearance:
        self.instance.extension = stored_extension(self.instance._pending_extension)
        return super().save(commit=commit)


class LineAppearanceFormSet(BaseInlineFormSet):
    """Checks the lines of one phone against each other, as they will be after saving."""

    def clean(self) -> None:
        # The phone's own checks run first: when two rows give one line number, Django's
        # generic "duplicate data for line_number" would otherwise hide the sentence below.
        lines: dict[int, str] = {}
        numbers: dict[str, int] = {}
        errors = []
        for form in self.forms:
            if not form.has_changed() and form.instance.pk is None:
                continue
            if self.can_delete and self._should_delete_form(form):
                continue
            line_number = form.cleaned_data.get("line_number")
            number = form.cleaned_data.get("number")
            if line_number is None or number is None:
                continue
            if line_number in lines:
                errors.append(
                    f"Line {line_number} is given twice ({lines[line_number]} and {number}); "
                    "each line of a phone rings for one extension."
                )
            if number in numbers:
                errors.append(
                    f"Extension {number} is given as both line {numbers[number]} and line "
                    f"{line_number}; an extension appears at most once on a phone."
                )
            lines.setdefault(line_number, number)
            numbers.setdefault(number, line_number)
        if errors:
            raise ValidationError(errors)
        super().clean()
