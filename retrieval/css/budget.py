"""The budget every comparison is charged to, so a page cannot make evaluation slow."""

from __future__ import annotations


class TooComplex(Exception):
    """The page's stylesheets would take too long to evaluate."""


class Budget:
    def __init__(self, units: int) -> None:
        self.left = units

    def spend(self, units: int) -> None:
        self.left -= units
        if self.left < 0:
            raise TooComplex("the page's stylesheets are too complex to evaluate")
