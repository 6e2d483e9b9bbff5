"""Selectors as data, and whether one compound selector matches an element."""

from __future__ import annotations

from dataclasses import dataclass

from retrieval.css.budget import Budget

Attribute = tuple[str, str, str, bool]  # name, operator ("" = present), value, ignore case
Nth = tuple[int, int, bool]  # an+b as (a, b), and whether it counts only its own tag
Key = tuple[str, str]  # what a selector is indexed by: ("#", id), (".", class), ("t", tag)


@dataclass(frozen=True)
class Element:
    tag: str
    id: str | None
    classes: frozenset[str]
    attributes: dict[str, str]
    position: tuple[int, int] = (1, 1)  # among its parent's elements, and those of its tag

    @classmethod
    def of(
        cls, tag: str, attrs: list[tuple[str, str | None]], position: tuple[int, int] = (1, 1)
    ) -> Element:
        attributes: dict[str, str] = {}
        for name, value in attrs:
            attributes.setdefault(name, value or "")
        return cls(
            tag,
            attributes.get("id"),
            frozenset(attributes.get("class", "").split()),
            attributes,
            position,
        )

    def index_keys(self) -> list[Key]:
        keys: list[Key] = [("*", ""), ("t", self.tag)]
        if self.id is not None:
            keys.append(("#", self.id))
        keys.extend((".", name) for name in self.classes)
        return keys


@dataclass(frozen=True)
class Compound:
    tag: str | None = None
    ids: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    attributes: tuple[Attribute, ...] = ()
    nots: tuple[tuple[Compound, ...], ...] = ()
    root: bool = False
    nths: tuple[Nth, ...] = ()

    @property
    def key(self) -> Key:
        if self.ids:
            return ("#", self.ids[0])
        if self.classes:
            return (".", self.classes[0])
        if self.tag is not None:
            return ("t", self.tag)
        return ("*", "")

    def matches(self, element: Element, budget: Budget) -> bool:
        budget.spend(1 + len(self.ids) + len(self.classes) + len(self.attributes))
        if self.tag is not None and self.tag != element.tag:
            return False
        if self.root and element.tag != "html":
            return False
        for step, offset, of_type in self.nths:
            if not _nth(element.position[1 if of_type else 0], step, offset):
                return False
        if any(element.id != name for name in self.ids):
            return False
        if any(name not in element.classes for name in self.classes):
            return False
        if not self._attributes_match(element, budget):
            return False
        return not any(
            compound.matches(element, budget) for group in self.nots for compound in group
        )

    def _attributes_match(self, element: Element, budget: Budget) -> bool:
        for name, operator, value, ignore_case in self.attributes:
            actual = element.attributes.get(name)
            if actual is None:
                return False
            budget.spend(len(actual) // 64)
            if not _attribute_matches(actual, operator, value, ignore_case):
                return False
        return True


@dataclass(frozen=True)
class Selector:
    compounds: tuple[Compound, ...]
    specificity: tuple[int, int, int]
    exact: bool  # False where it was widened (it may match more elements than a browser's)


def _nth(position: int, step: int, offset: int) -> bool:
    """Whether ``position`` is ``step * n + offset`` for some n >= 0."""
    if step == 0:
        return position == offset
    return (position - offset) % step == 0 and (position - offset) // step >= 0


def _attribute_matches(actual: str, operator: str, value: str, ignore_case: bool) -> bool:
    if ignore_case:
        actual, value = actual.lower(), value.lower()
    if operator == "":
        return True
    if operator == "=":
        return actual == value
    if operator == "~=":
        return bool(value) and value in actual.split()
    if operator == "|=":
        return actual == value or actual.startswith(value + "-")
    if not value:
        return False
    if operator == "^=":
        return actual.startswith(value)
    if operator == "$=":
        return actual.endswith(value)
    return value in actual  # *=
