"""PII scrubbing: personal data and secrets are replaced before an example leaves the store.

Each kind has a pattern and, where a checksum exists, a check (Luhn for cards, mod-97 for
IBANs), so that order numbers and prices survive while real identifiers do not. Patterns run
from most to least specific: a secret or an IBAN must not be half-eaten as a phone number.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

_SECRET_PATTERNS = (
    r"\b(?:sk|pk|rk)-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_-]{16,}",  # OpenAI-style keys
    r"\blg-[A-Za-z0-9_-]{20,}",  # this gateway's keys
    r"\bgh[pousr]_[A-Za-z0-9]{20,}",  # GitHub tokens
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}",  # Slack tokens
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key ids
    r"\bAIza[0-9A-Za-z_-]{30,}",  # Google API keys
    r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWTs
    r"(?i:\bbearer\s+)[A-Za-z0-9._~+/-]{16,}=*",  # Authorization headers
    # Anything long, mixed letters and digits, that looks generated rather than written. No
    # hyphens: a URL slug of words and a year is prose, and hyphenated key formats are above.
    r"\b(?=[A-Za-z0-9_]*\d)(?=[A-Za-z0-9_]*[A-Za-z])[A-Za-z0-9_]{32,}\b",
)
SECRET = re.compile("|".join(f"(?:{pattern})" for pattern in _SECRET_PATTERNS))
EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
PHONE = re.compile(r"(?<![\w+(])(?:\+|00)?\(?\d[\d ().-]{6,}\d(?![\w:])")
# Shapes that look like phone numbers to the pattern above but are not.
_NOT_PHONE = re.compile(
    r"\d{4}-\d{2}-\d{2}\b.*"  # an ISO date, maybe with a time
    r"|\d{1,2}[./]\d{1,2}[./]\d{2,4}\b.*"  # a European or US date
    r"|\d{1,3}(?:\.\d{1,3}){3}"  # an IPv4 address
)


_KEPT = re.compile("\x00(\\d+)\x00")


@dataclass
class ScrubReport:
    """How many of each kind were replaced, summed over every text scrubbed."""

    counts: Counter[str] = field(default_factory=Counter)


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def _is_card(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _is_phone(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    if _NOT_PHONE.fullmatch(match.strip("()")):
        return False
    # Nine or more digits with a separator or a country prefix: not a price, year or amount.
    has_shape = match.startswith(("+", "00")) or bool(re.search(r"[ ().-]", match))
    return 9 <= len(digits) <= 15 and has_shape


# (kind, pattern, check, whether a match failing its check is shielded from later patterns)
_KINDS: tuple[tuple[str, re.Pattern[str], Callable[[str], bool] | None, bool], ...] = (
    ("SECRET", SECRET, None, False),
    ("EMAIL", EMAIL, None, False),
    # An IBAN-shaped code with a bad checksum is still one code, not a phone number.
    ("IBAN", IBAN, iban_valid, True),
    # A digit run failing Luhn is not a card, but may well be a phone number.
    ("CARD", CARD, _is_card, False),
    ("PHONE", PHONE, _is_phone, False),
)


def scrub(text: str, report: ScrubReport | None = None) -> str:
    """Replace personal data and secrets with ``[KIND]`` placeholders.

    An IBAN-shaped match with a wrong checksum is set aside while the later patterns run,
    so that they cannot eat part of it.
    """
    kept: list[str] = []
    for kind, pattern, check, shield in _KINDS:

        def replace(
            match: re.Match[str], kind: str = kind, check: object = check, shield: bool = shield
        ) -> str:
            if check is not None and not check(match.group(0)):  # type: ignore[operator]
                if not shield:
                    return match.group(0)
                kept.append(match.group(0))
                return f"\x00{len(kept) - 1}\x00"
            if report is not None:
                report.counts[kind] += 1
            return f"[{kind}]"

        text = pattern.sub(replace, text)
    return _KEPT.sub(lambda match: kept[int(match.group(1))], text)
