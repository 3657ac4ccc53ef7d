"""Semantic versions ``MAJOR.MINOR.PATCH`` of action versions."""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

__all__ = ["Bump", "Version"]

_RE = re.compile(r"(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})")

Bump = Literal["major", "minor", "patch"]


class Version(NamedTuple):
    """A parsed version; tuples order like semver precedence (no pre-releases here)."""

    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``"1.2.3"``; raise ``ValueError`` with a clear message otherwise."""
        m = _RE.fullmatch(text.strip())
        if m is None:
            raise ValueError(f"{text!r} is not a version of the form MAJOR.MINOR.PATCH")
        return cls(int(m[1]), int(m[2]), int(m[3]))

    def bump(self, part: Bump) -> Version:
        """The next version after this one for a ``major``, ``minor`` or ``patch`` change."""
        if part == "major":
            return Version(self.major + 1, 0, 0)
        if part == "minor":
            return Version(self.major, self.minor + 1, 0)
        return Version(self.major, self.minor, self.patch + 1)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"
