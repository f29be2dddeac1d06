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


# The text of every value an int8 can hold, indexed by value + 128.
_INT8_TEXT = np.array([str(value) for value in range(-128, 128)], dtype=object)


def int8_list_text(values: np.ndarray) -> str:
    """The JSON text of an int8 array as a list, as json.dumps would read it back."""
    if values.dtype != np.int8:
        raise TypeError(f"int8_list_text takes an int8 array, not {values.dtype}")
    return "[" + ",".join(_INT8_TEXT[values.astype(np.int16) + 128].tolist()) + "]"
