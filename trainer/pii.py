"""PII scrubbing: personal data and secrets are replaced before an example leaves the store.

Each kind has a pattern and, where a checksum or a shape exists, a check (Luhn for cards,
mod-97 for IBANs, digit layouts for phones, randomness for key-like blobs), so that order
numbers, prices and paths survive while real identifiers do not. Patterns run from most to
least specific: a secret or an IBAN must not be half-eaten as a phone number.

Regular expressions rather than a library: Presidio needs spaCy models and reads names and
places the trainer has no use for, detect-secrets scans files rather than sentences, and
phonenumbers needs the caller's region for national numbers. Every pattern here is bounded
or anchored at the start of a run, so scrubbing stays linear in the text: a hostile
correction cannot stall the trainer.

``scrub_message`` walks a whole chat message: content given as text or as parts, ``name``,
tool calls and their JSON arguments; only the keys that give a message its structure
(``role``, ``type``, ``id``, ``tool_call_id``) are kept as they are.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

_SECRET_PATTERNS = (
    r"\b(?:sk|pk|rk)-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_-]{16,}",  # OpenAI-style keys
    r"\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}",  # Stripe keys
    r"\blg-[A-Za-z0-9_-]{20,}",  # this gateway's keys
    r"\bgh[pousr]_[A-Za-z0-9]{20,}",  # GitHub tokens
    r"\bgithub_pat_[A-Za-z0-9_]{22,}",  # GitHub fine-grained tokens
    r"\bhf_[A-Za-z0-9]{30,}",  # Hugging Face tokens
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}",  # Slack tokens
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key ids
    r"\bAIza[0-9A-Za-z_-]{30,}",  # Google API keys
    r"\bGOCSPX-[A-Za-z0-9_-]{20,}",  # Google OAuth client secrets
    r"(?<![\w~.-])[\w~.-]{3}\dQ~[\w~.-]{31,34}(?![\w~.-])",  # Azure AD client secrets
    r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWTs
    r"(?i:\bbearer\s+)[A-Za-z0-9._~+/-]{16,}=*",  # Authorization headers
)
SECRET = re.compile("|".join(f"(?:{pattern})" for pattern in _SECRET_PATTERNS))
# Base64 of 40 characters or more: AWS secret access keys (40), Azure storage account keys
# (88, with padding). Slashes are allowed, so a path matches too; the check tells them apart.
# Before GENERATED, which would take the run between two slashes and leave the rest.
KEY_BLOB = re.compile(r"(?<![\w/+.-])[A-Za-z0-9/+]{40,}={0,2}(?![\w/+=])")
# Anything long, mixed letters and digits, that looks generated rather than written. No
# hyphens: a URL slug of words and a year is prose, and hyphenated key formats are above.
GENERATED = re.compile(r"\b(?=[A-Za-z0-9_]*\d)(?=[A-Za-z0-9_]*[A-Za-z])[A-Za-z0-9_]{32,}\b")

# What a value is called when it is a secret: `password: ...`, `DB_PASSWORD=...`,
# `"api_key": "..."`, `AccountKey=...` (Azure connection strings), `sig=...` (SAS tokens).
_SECRET_NAMES = (
    r"password|passwd|passphrase|passcode|pwd"
    r"|secret[_-]?(?:access[_-]?)?key|client[_-]?secret|app[_-]?secret|sig"
    r"|api[_-]?key|access[_-]?key|account[_-]?key|private[_-]?key|signing[_-]?key"
    r"|(?:auth|access|refresh|session|id|api|private)[_-]?token"
)
# A short prefix (DB_, aws_, Shared...) is allowed; bounded, and tried only where a name
# starts, so that ordinary text costs one step per word.
SECRET_NAME = re.compile(rf"(?i:[\w.-]{{0,40}}?(?:{_SECRET_NAMES}))")
NAMED_SECRET = re.compile(
    rf"(?<![\w.-]){SECRET_NAME.pattern}[\"']?[ \t]{{0,16}}[:=][ \t]{{0,16}}"
    r"(?![\"']?\[[A-Z_]+\])(?P<value>\"[^\"\n]+\"|'[^'\n]+'|[^\s\"']+)"
)
URL_PASSWORD = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{0,20}://[^/\s:@]{1,256}:(?P<value>[^/\s@]+)@")
PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
PEM_END = re.compile(r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
# What follows a BEGIN line whose END is missing (a key cut short): header lines and base64,
# with line breaks raw or escaped as in JSON; the prose after it is kept.
_PEM_BODY = re.compile(
    r"(?:\s|\\[nr]|[A-Za-z0-9+/]{16,}={0,2}|[A-Za-z0-9+/]{1,15}={1,2}"
    r"|(?:Proc-Type|DEK-Info|Comment):[^\n\\]*)*"
)

EMAIL = re.compile(
    r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.(?:xn--[a-z0-9-]+|[^\W\d_]{2,})(?![\w-])"
)
# Only the countries that issue IBANs: an IBAN-shaped word from elsewhere is neither
# replaced nor shielded from the later patterns.
_IBAN_COUNTRIES = (
    "AD|AE|AL|AT|AZ|BA|BE|BG|BH|BI|BR|BY|CH|CR|CY|CZ|DE|DJ|DK|DO|EE|EG|ES|FI|FK|FO|FR|GB|GE|GI"
    "|GL|GR|GT|HR|HU|IE|IL|IQ|IS|IT|JO|KW|KZ|LB|LC|LI|LT|LU|LV|LY|MC|MD|ME|MK|MN|MR|MT|MU|NI"
    "|NL|NO|OM|PK|PL|PS|PT|QA|RO|RS|RU|SA|SC|SD|SE|SI|SK|SM|SO|ST|SV|TL|TN|TR|UA|VA|VG|XK|YE"
)
IBAN = re.compile(
    rf"(?i:\b(?:{_IBAN_COUNTRIES})\d{{2}}(?: ?[A-Z0-9]{{4}}){{2,7}}(?: ?[A-Z0-9]{{1,4}})?\b)"
)
CARD = re.compile(
    r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"
    r"|(?<![\d.])\d{3,6}(?:\.\d{3,6}){2,4}(?![\d]|\.\d)"  # 4111.1111.1111.1111
)
PHONE = re.compile(r"(?<![\w+(])(?:\+|00)?\(?\d[\d ().-]{6,24}\d(?![\w:])")
# Shapes that look like phone numbers to the pattern above but are not.
_NOT_PHONE = re.compile(
    r"\d{4}-\d{2}-\d{2}\b.*"  # an ISO date, maybe with a time
    r"|\d{1,2}[./]\d{1,2}[./]\d{2,4}\b.*"  # a European or US date
    r"|\d{1,3}(?:\.\d{1,3}){3}"  # an IPv4 address
)
# Phone numbers written without separators: North American (area code and exchange start
# with 2-9), national with a trunk 0, international with 00. Other digit runs (order
# numbers, timestamps) are kept.
_BARE_PHONE = re.compile(r"1?[2-9]\d{2}[2-9]\d{6}|0[1-9]\d{8,9}|00[1-9]\d{8,12}")
# A local number: exchange and line, `555-0123`.
_LOCAL_PHONE = re.compile(r"[2-9]\d{2}[- ]\d{4}")

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


def _iban_span(match: str) -> Span | None:
    """The valid IBAN an IBAN-shaped match starts with: the pattern, case-blind, may have
    taken the words after it as groups (`BE68 5390 0754 7034 today`), so each group boundary
    is tried, longest first."""
    ends = [group.end() for group in re.finditer(r"\S+", match)]
    return next(((0, end) for end in reversed(ends) if iban_valid(match[:end])), None)


def _is_card(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _card_span(match: str) -> Span | None:
    """The card number in a run of digit groups: the pattern also takes the groups next to
    it (`order 12 4111 1111 1111 1111`), so windows of whole groups are tried, the earliest
    and then the longest first."""
    if _is_card(match):
        return 0, len(match)
    groups = list(re.finditer(r"\d+", match))
    for first, opening in enumerate(groups):
        digits, found = "", None
        for group in groups[first:]:
            digits += group.group(0)
            if len(digits) > 19:
                break
            if len(digits) >= 13 and luhn_valid(digits):
                found = opening.start(), group.end()
        if found is not None:
            return found
    return None


def _is_phone(match: str) -> bool:
    digits = re.sub(r"\D", "", match)
    if _NOT_PHONE.fullmatch(match.strip("()")):
        return False
    if digits == match:
        return bool(_BARE_PHONE.fullmatch(digits))
    if _LOCAL_PHONE.fullmatch(match):
        return not _is_round_range(match)
    # Nine or more digits with a separator or a country prefix: not a price, year or amount.
    has_shape = match.startswith(("+", "00")) or bool(re.search(r"[ ().-]", match))
    return 9 <= len(digits) <= 15 and has_shape


def _is_round_range(match: str) -> bool:
    """`250-1000`, `900-1700`: a range of round numbers, not a local phone number."""
    low, high = re.split(r"[- ]", match)
    return low.endswith("0") and high.endswith("00")


def _looks_generated(match: str) -> bool:
    """Random base64 is about half capitals and digits; a path or a word is not."""
    body = match.rstrip("=")
    strong = sum(char.isupper() or char.isdigit() for char in body)
    return any(char.islower() for char in body) and strong >= 0.3 * len(body)


# Where in a match the thing of that kind is, if anywhere.
Span = tuple[int, int]
Check = Callable[[str], Span | None]
# Whether a match that failed its check is set aside, unseen by the later patterns.
Shield = Callable[[str], bool]


def _whole(predicate: Callable[[str], bool]) -> Check:
    return lambda match: (0, len(match)) if predicate(match) else None


def _holds_no_card(match: str) -> bool:
    """An IBAN-shaped prefix must not hide a card number after it (`nl12 4111 1111 ...`)."""
    return not any(_card_span(card.group(0)) for card in CARD.finditer(match))


# (kind, pattern, check, whether a match failing its check is shielded from later patterns).
# A pattern with a ``value`` group replaces only that group: `password: [SECRET]`.
_KINDS: tuple[tuple[str, re.Pattern[str], Check | None, Shield | None], ...] = (
    ("SECRET", NAMED_SECRET, None, None),
    ("SECRET", URL_PASSWORD, None, None),
    ("SECRET", SECRET, None, None),
    ("SECRET", KEY_BLOB, _whole(_looks_generated), None),
    ("SECRET", GENERATED, None, None),
    ("EMAIL", EMAIL, None, None),
    # An IBAN-shaped code with a bad checksum is still one code, not a phone number.
    ("IBAN", IBAN, _iban_span, _holds_no_card),
    # A digit run failing Luhn is not a card, but may well be a phone number.
    ("CARD", CARD, _card_span, None),
    ("PHONE", PHONE, _whole(_is_phone), None),
)


def scrub(text: str, report: ScrubReport | None = None) -> str:
    """Replace personal data and secrets with ``[KIND]`` placeholders.

    An IBAN-shaped match with a wrong checksum is set aside while the later patterns run,
    so that they cannot eat part of it.
    """
    report = report if report is not None else ScrubReport()
    kept: list[str] = []  # the matches set aside, put back at the end
    text = _scrub_private_keys(text, report)
    for kind, pattern, check, shield in _KINDS:
        replace = partial(_replace, kind=kind, check=check, shield=shield, report=report,
                          kept=kept)  # fmt: skip
        text = pattern.sub(replace, text)
    return _KEPT.sub(lambda match: kept[int(match.group(1))], text)


def _replace(
    match: re.Match[str],
    *,
    kind: str,
    check: Check | None,
    shield: Shield | None,
    report: ScrubReport,
    kept: list[str],
) -> str:
    whole = match.group(0)
    span = (0, len(whole)) if check is None else check(whole)
    if span is None:
        if shield is None or not shield(whole):
            return whole
        kept.append(whole)
        return f"\x00{len(kept) - 1}\x00"
    report.counts[kind] += 1
    start, end = span
    if (start, end) != (0, len(whole)):  # the rest is not of this kind: later patterns see it
        return f"{whole[:start]}[{kind}]{whole[end:]}"
    return _placeholder(match, kind)


def _placeholder(match: re.Match[str], kind: str) -> str:
    """``[KIND]`` for the whole match, or for its ``value`` group only (inside its quotes),
    so that `"password": "..."` stays a key and a string."""
    if "value" not in match.re.groupindex:
        return f"[{kind}]"
    start, end = (offset - match.start() for offset in match.span("value"))
    whole, value = match.group(0), match.group("value")
    quote = value[0] if value[0] in "\"'" else ""
    return f"{whole[:start]}{quote}[{kind}]{quote}{whole[end:]}"


def _scrub_private_keys(text: str, report: ScrubReport) -> str:
    """PEM private-key blocks, BEGIN to END, or to the end of their body when END is
    missing. Searched forward once, not with a lazy regex that would rescan the rest of the
    text for every BEGIN line without an END."""
    parts, position, ended = [], 0, True
    while (begin := PEM_BEGIN.search(text, position)) is not None:
        # Once a BEGIN has no END after it, no later BEGIN has one either.
        end = PEM_END.search(text, begin.end()) if ended else None
        ended = end is not None
        parts += [text[position : begin.start()], "[SECRET]"]
        report.counts["SECRET"] += 1
        position = end.end() if end is not None else _body_end(text, begin.end())
    return "".join(parts) + text[position:]


def _body_end(text: str, start: int) -> int:
    body = _PEM_BODY.match(text, start)
    end = body.end() if body is not None else start
    while end > start and text[end - 1].isspace():  # the line break before the prose stays
        end -= 1
    return end


# -- chat messages ----------------------------------------------------------------------------
_STRUCTURAL_KEYS = frozenset({"role", "type", "id", "tool_call_id"})


def scrub_message(message: dict[str, Any], report: ScrubReport) -> dict[str, Any]:
    """The message with every string scrubbed but those of its structural keys."""
    scrubbed: dict[str, Any] = _scrub_tree(message, report, None, _STRUCTURAL_KEYS)
    return scrubbed


def scrub_json(value: Any, report: ScrubReport) -> Any:
    """Every string of a decoded JSON value scrubbed; the value of a key named like a
    secret (`password`, `api_key`...) replaced whole, since its name is its only context."""
    return _scrub_tree(value, report, None, frozenset())


def _scrub_tree(value: Any, report: ScrubReport, key: str | None, keep: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {name: item if name in keep else _scrub_tree(item, report, name, keep)
                for name, item in value.items()}  # fmt: skip
    if isinstance(value, list):
        return [_scrub_tree(item, report, key, keep) for item in value]
    if not isinstance(value, str):
        return value
    if key == "arguments":  # a tool call's arguments: JSON in a string
        return _scrub_arguments(value, report)
    if key is not None and SECRET_NAME.fullmatch(key) and value:
        report.counts["SECRET"] += 1
        return "[SECRET]"
    return scrub(value, report)


def _scrub_arguments(text: str, report: ScrubReport) -> str:
    """Decoded, so that a key's name is context and escapes are undone; written back only
    if something was replaced, so that clean arguments keep the model's own formatting."""
    try:
        decoded = json.loads(text)
    except ValueError:
        return scrub(text, report)
    if not isinstance(decoded, dict | list):
        return scrub(text, report)
    scrubbed = scrub_json(decoded, report)
    return text if scrubbed == decoded else json.dumps(scrubbed, ensure_ascii=False)
