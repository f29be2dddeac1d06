"""CSV cells a spreadsheet opens as text: the audit trail's export, the evaluation report."""

from __future__ import annotations

# A spreadsheet runs a cell that starts with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: str) -> str:
    # A login name, an agent's name or a search filter is typed by someone; keep it text.
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell
