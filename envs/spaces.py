"""The text space used for both observations and actions."""

from __future__ import annotations

import string
from typing import Any

from gymnasium import spaces

#: Characters ``TextSpace.sample()`` draws from: printable ASCII, so samples are commands a
#: parser can at least read (they are nonsense, which is what a robustness check wants).
SAMPLE_CHARSET = string.ascii_letters + string.digits + string.punctuation + " "


class TextSpace(spaces.Text):
    """Any Python ``str`` of at most ``max_length`` characters.

    gymnasium's ``spaces.Text`` only contains strings over a fixed charset (alphanumerics by
    default); game text has punctuation, newlines and sometimes non-ASCII characters, and a
    model may emit any of them. Membership is therefore "is a string of bounded length";
    ``sample()`` still draws from :data:`SAMPLE_CHARSET`.
    """

    def __init__(self, max_length: int, *, min_length: int = 0, seed: int | None = None):
        super().__init__(max_length, min_length=min_length, charset=SAMPLE_CHARSET, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"TextSpace(max_length={self.max_length})"
