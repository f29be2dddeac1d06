"""Rule R4: an extension is written exactly as the PBX writes it.

QMS compares extensions as text and never reformats them, so anything a person might
type to make a number readable (spaces, dashes, dots, brackets) is refused rather than
stripped: `617-555-1212` would never match the `6175551212` the CallManager sends.

Two shapes are accepted:
- a dialable number: digits, `*` and `#`, with an optional leading `+` (E.164 as the
  PBX sends it, feature codes);
- a SIP user name for SIP or Lync users that are not numbers (`alice`, `j.smith`,
  `sales-desk`): letters, digits, `.`, `_` and `-`, with at least one letter. Such an
  extension can only be placed on a SIP or Lync phone (checked by the line appearance).
"""

from __future__ import annotations

import unicodedata

from django.core.exceptions import ValidationError
from django.utils.deconstruct import deconstructible

# The two shapes are defined once, beside the wire's bounds, which hold observations to them.
from integrations.bounds import DIALABLE, SIP_USER_NAME

FORMATTING = "-.()/"
EXACT_MATCH_HINT = "QMS must match the PBX exactly, so write the extension as the PBX writes it"


def is_sip_user_name(number: str) -> bool:
    """True for an extension that is a SIP user name rather than a dialable number."""
    return SIP_USER_NAME.fullmatch(number) is not None


@deconstructible
class ExtensionNumberValidator:
    message = "Extension {number!r} is not valid: {reason}."
    code = "invalid_extension"

    def __call__(self, value: str) -> None:
        reason = self.reason(value)
        if reason:
            raise ValidationError(
                self.message.format(number=value, reason=reason),
                code=self.code,
                params={"value": value},
            )

    def reason(self, value: str) -> str:
        if value == "":
            return "it is empty"
        if any(character.isspace() for character in value):
            return f"it contains white space; {EXACT_MATCH_HINT}"
        if DIALABLE.fullmatch(value) or is_sip_user_name(value):
            return ""
        formatting = sorted({character for character in value if character in FORMATTING})
        if formatting:
            shown = " ".join(formatting)
            return f"it contains formatting characters ({shown}); {EXACT_MATCH_HINT}"
        return (
            f"{EXACT_MATCH_HINT}: digits, * and # with an optional leading +, "
            "or a SIP user name of letters, digits, '.', '_' and '-'"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExtensionNumberValidator)

    def __hash__(self) -> int:
        return hash(self.code)


validate_extension_number = ExtensionNumberValidator()


# Names from a phone export ----------------------------------------------------------------
#
# A directory export is read back by people, often in a spreadsheet: a cell starting with
# = + - or @ is a formula there (CSV injection), and a control character (NUL above all,
# which PostgreSQL refuses in text) has no place in a name. A device name is the phone's
# identity as the PBX writes it (SEP001122334455, a MAC, a SIP instance id such as
# urn:uuid:...), so it holds letters, digits and . _ - : @ and spaces; an agent name is a
# person's, so anything printable goes except a formula's first character and < or >,
# which no one's name holds and which would only ever be markup.

FORMULA_START = "=+-@"
DEVICE_PUNCTUATION = set("._-:@ ")
NOT_IN_AGENT_NAMES = set("<>")


def control_character(value: str) -> str:
    """The first control character (Unicode category Cc) in `value`, or ""."""
    return next((character for character in value if unicodedata.category(character) == "Cc"), "")


def device_name_problem(name: str) -> str:
    """Why `name` cannot be a phone's device name, as a sentence's end; "" if it can."""
    if not name[:1].isalnum():
        return "it must start with a letter or a digit"
    odd = sorted({c for c in name if not c.isalnum() and c not in DEVICE_PUNCTUATION})
    if odd:
        shown = " ".join(odd)
        return f"it holds {shown}; a device name holds letters, digits and . _ - : @ and spaces"
    return ""


def agent_name_problem(name: str) -> str:
    """Why `name` cannot be an agent's name, as a sentence's end; "" if it can."""
    if name[:1] in set(FORMULA_START):
        return f"it starts with {name[0]}, which a spreadsheet reads as a formula"
    odd = sorted({c for c in name if c in NOT_IN_AGENT_NAMES})
    if odd:
        return f"it holds {' '.join(odd)}, which no person's name does"
    return ""
