"""A JSON value that comes with its text, for a JSONField written in bulk.

Django turns a JSONField's value into text with json.dumps for every row it writes. For a
finished recording's waveform (a thousand buckets of minimum and maximum per channel) that
is 0.3 ms a call, a tenth of finishing a short call, while the code that drew it holds the
numbers as arrays and can write the text in a fraction of that (recordings/waveform.py).
A field declared with `encoder=TextKeepingEncoder` writes a WithJSON's own text; any other
value is encoded as json.dumps would.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np


class WithJSON(dict):
    """A finished dict value and its JSON text, made together; not to be changed after.

    Read back from the database it is a plain dict, as every JSONField value is."""

    __slots__ = ("text",)

    def __init__(self, value: dict, text: str) -> None:
        super().__init__(value)
        self.text = text


class TextKeepingEncoder(json.JSONEncoder):
    """json.dumps(value, cls=TextKeepingEncoder): a WithJSON's own text, or the usual."""

    def encode(self, o: Any) -> str:
        if type(o) is WithJSON:
            return o.text
        return super().encode(o)


# The text of each int8 value right-aligned in four characters ("-128", " -12", "   5"),
# one bytes.translate table per character, indexed by the value plus 128.
_INT8_COLUMNS = tuple(
    bytes(ord(f"{code - 128:>4}"[column]) for code in range(256)) for column in range(4)
)


def int8_list_text(values: np.ndarray) -> str:
    """The JSON text of an int8 array as a list, as json.dumps would read it back: each
    value's four columns and a comma laid side by side by bytes.translate, in C, then the
    padding taken out (a tenth of joining the values' strings)."""
    if values.dtype != np.int8:
        raise TypeError(f"int8_list_text takes an int8 array, not {values.dtype}")
    codes = (values.view(np.uint8) ^ 0x80).tobytes()  # each value plus 128, as a byte
    laid = bytearray(b"," * (5 * len(codes)))
    for column, table in enumerate(_INT8_COLUMNS):
        laid[column::5] = codes.translate(table)
    return "[" + laid[:-1].translate(None, b" ").decode("ascii") + "]"
