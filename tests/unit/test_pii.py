"""PII scrubbing: secrets, emails, IBANs, cards and phones replaced; prices and years kept."""

from __future__ import annotations

import pytest

from trainer.pii import ScrubReport, iban_valid, luhn_valid, scrub


def _scrub(text: str) -> tuple[str, dict[str, int]]:
    report = ScrubReport()
    return scrub(text, report), dict(report.counts)


# -- secrets --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "secret",
    [
        pytest.param("sk-proj-abcdefghij1234567890XYZ", id="openai-project"),
        pytest.param("sk-abcdefghijklmnop1234", id="openai"),
        pytest.param("lg-ABCDEFGHIJKLMNOPQRSTUV12", id="gateway-key"),
        pytest.param("ghp_abcdefghijklmnopqrstuvwxyz0123456789", id="github"),
        pytest.param("xoxb-1234567890-abcdefghij", id="slack"),
        pytest.param("AKIAIOSFODNN7EXAMPLE", id="aws"),
        pytest.param("AIzaSyA1234567890abcdefghijklmnopqrstu", id="google"),
        pytest.param(
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
            "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            id="jwt",
        ),
        pytest.param("a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8", id="generic-mixed-32+"),
    ],
)
def test_secret_is_replaced(secret: str) -> None:
    text, counts = _scrub(f"my key is {secret} please rotate it")
    assert text == "my key is [SECRET] please rotate it"
    assert counts == {"SECRET": 1}


def test_bearer_token_is_replaced_with_its_scheme() -> None:
    text, counts = _scrub("Authorization: Bearer abc.def-ghi~jkl+mno/pqr== was sent")
    assert text == "Authorization: [SECRET] was sent"
    assert counts == {"SECRET": 1}


@pytest.mark.parametrize(
    "text",
    ["Bearer abc", "lg-short", "ghp_short", "AIzaShort", "we use sk-learn for this"],
)
def test_short_secret_lookalikes_are_kept(text: str) -> None:
    assert _scrub(text) == (text, {})


# -- emails ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail john.doe+orders@example.co.uk now", "mail [EMAIL] now"),
        ("Reach me at Jane.Doe@Example.COM.", "Reach me at [EMAIL]."),
    ],
)
def test_email_is_replaced(text: str, expected: str) -> None:
    assert _scrub(text) == (expected, {"EMAIL": 1})


# -- IBANs ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "iban",
    [
        "BE68 5390 0754 7034",
        "BE68539007547034",
        "GB82 WEST 1234 5698 7654 32",
        "DE89 3704 0044 0532 0130 00",
    ],
)
def test_valid_iban_is_replaced(iban: str) -> None:
    assert iban_valid(iban)
    assert _scrub(f"pay to {iban} today") == ("pay to [IBAN] today", {"IBAN": 1})


def test_invalid_checksum_compact_iban_is_kept() -> None:
    assert not iban_valid("BE68539007547035")
    text = "pay to BE68539007547035 today"
    assert _scrub(text) == (text, {})


def test_invalid_checksum_grouped_iban_is_kept() -> None:
    assert not iban_valid("NL92 ABNA 0417 1643 00")
    text = "pay to NL92 ABNA 0417 1643 00 today"
    assert _scrub(text) == (text, {})


def test_iban_valid_checks_mod_97_and_length() -> None:
    assert iban_valid("NL91ABNA0417164300")
    assert not iban_valid("NL92ABNA0417164300")
    assert not iban_valid("BE68 5390")  # too short


# -- cards ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "card",
    ["4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111", "5500 0000 0000 0004"],
)
def test_luhn_valid_card_is_replaced(card: str) -> None:
    assert _scrub(f"card {card} expires soon") == ("card [CARD] expires soon", {"CARD": 1})


@pytest.mark.parametrize("card", ["4111 1111 1111 1112", "4111-1111-1111-1113"])
def test_luhn_invalid_card_is_kept(card: str) -> None:
    text = f"card {card} expires soon"
    assert _scrub(text) == (text, {})


def test_luhn_valid() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert not luhn_valid("4111111111111112")


# -- phones ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "phone",
    [
        "+32 470 12 34 56",
        "(555) 123-4567",
        "0044 20 7946 0958",
        "+1 (555) 123-4567",
        "1-800-555-0199",
    ],
)
def test_phone_is_replaced(phone: str) -> None:
    assert _scrub(f"call {phone} now") == ("call [PHONE] now", {"PHONE": 1})


# -- what must survive ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "The bike costs 1,890 euros.",
        "It weighs 12.4 kilograms.",
        "The model was introduced in 2009.",
        "Your order 123456 has shipped.",
        "Order 12345678 shipped between 2009-2015.",
        "The date 2024-01-15 was fine.",
        "Coordinates 50.8503, 4.3517 and price 1.234.567,89 EUR.",
        "Returns are accepted within 30 days of delivery for a full refund.",
        "supercalifragilisticexpialidocious_and_more_words_here",
    ],
)
def test_ordinary_text_is_kept(text: str) -> None:
    assert _scrub(text) == (text, {})


def test_url_slug_with_a_year_is_kept() -> None:
    text = "See https://example.com/help/how-to-return-your-order-in-2024 for details."
    assert _scrub(text) == (text, {})


def test_date_and_time_are_kept() -> None:
    text = "My order on 2024-01-15 14:02 failed."
    assert _scrub(text) == (text, {})


# -- the report -----------------------------------------------------------------------------
def test_report_counts_every_kind_across_calls() -> None:
    report = ScrubReport()
    first = scrub(
        "Key sk-abcdefghijklmnop1234, mail a@b.io or c@d.org, IBAN BE68 5390 0754 7034.",
        report,
    )
    second = scrub("Card 4111 1111 1111 1111, phone +32 470 12 34 56, mail e@f.com.", report)
    assert first == "Key [SECRET], mail [EMAIL] or [EMAIL], IBAN [IBAN]."
    assert second == "Card [CARD], phone [PHONE], mail [EMAIL]."
    assert dict(report.counts) == {"SECRET": 1, "EMAIL": 3, "IBAN": 1, "CARD": 1, "PHONE": 1}


def test_scrub_without_report_still_replaces() -> None:
    assert scrub("write to a@b.io") == "write to [EMAIL]"
