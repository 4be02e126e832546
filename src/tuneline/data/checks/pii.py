"""Find personal data (PII) in free text: emails, phone numbers, card numbers, IBANs, national ids.

Why our own detector: the ``pii_detected`` check runs on every text part of every record, offline,
inside a data-validation step that must stay fast and dependency-light. Full PII engines such as
Microsoft Presidio need spaCy language models that cannot be downloaded here, pull in a large
dependency tree, and are tuned for recall on prose, not for fine-tuning data full of numbers
(ages, measurements, dates, image ids). So this module is a small set of precompiled regular
expressions (the scanner, tuned for precision below), each candidate then confirmed by a library
that maintains the rules: ``python-stdnum`` for the checksums and registries (Luhn, ISO 13616
mod-97 and the IBAN registry's lengths and BBAN formats, SSA rules, DNI/NIE mod-23, BSN 11-check,
codice fiscale, Verhoeff) and ``phonenumbers.PhoneNumberMatcher`` for phones (the whole candidate
must be one possible number of the region its form implies).

Design choices (what real fine-tuning data looks like, and what we therefore do):

* **Precision over recall.** A finding is a warning a person has to read; a detector that flags every
  year and dose trains people to ignore it. Forms that cannot be told apart from ordinary numbers
  without context (a bare 10-digit US number, a bare 9-digit SSN or BSN) are only reported when
  formatted (or, for SSN/BSN, right after a keyword such as ``SSN`` or ``BSN``).
* **Emails**: ``local@domain.tld`` with an ASCII dot-atom local part (letters, digits, ``. _ % + -``),
  DNS labels and an alphabetic TLD of 2-24 letters. Not reported: asset names such as ``icon@2x.png``
  / ``logo@3x.jpg`` (Apple's resolution suffix, common in scraped HTML and image datasets), anything
  whose "TLD" is an image/file extension, ``user@localhost`` (no TLD), ``@handles`` and
  ``pkg@1.2.3`` version pins (no local part / numeric TLD). Service addresses such as
  ``git@github.com`` *are* reported: they are email-shaped and the check is a warning.
* **Phones** (``detail``):
  ``international``: ``+CC ...`` with 9-15 digits, space/dot/dash separators, optional ``(0)``,
  also unbroken (``+447700900123``); or ``00CC ...``, spaced or dashed only (zero-padded ids and
  hex codes start with 00 too).
  ``nanp``: US/Canada ``(555) 123-4567``, ``555-123-4567``, ``555.123.4567``, ``555 123 4567``,
  optionally ``1-`` / ``+1`` prefixed; the area code must start with 2-9.
  ``national``: trunk-prefix forms ``0[1-9]...`` with 10-11 digits in groups of 2+ and one kind of
  separator, e.g. UK ``020 7946 0958``, ``07700 900123``, French ``01 23 45 67 89`` /
  ``01.23.45.67.89``, German ``030 12345678``; unbroken only with 11 digits (UK ``07700900123``).
  Not detected: bare 10-digit numbers (``5551234567``, ``0123456789``), which are as often ids,
  ISBN-10s or timestamps. Every match must stand alone: not inside a word or id
  (``ISIC_0000123``, ``IP_1234567``), not part of a longer run of numbers, not a decimal.
* **Cards** (``detail`` = network): 13-19 digits, either unbroken or in the usual groups
  (4-4-4-4, 4-4-4-4-3, 4-6-5, 4-6-4) with one kind of separator (space or dash); the issuer prefix
  and length must fit a major network (Visa, Mastercard, Amex, Diners, JCB, UnionPay, Discover,
  Maestro) and the Luhn check must pass. Millisecond timestamps (13 digits starting with 1) and
  runs of dates are thus not cards.
* **IBANs** (``detail`` = country): two upper-case letters, two check digits, then the upper-case
  BBAN, unbroken or with single spaces (usually groups of 4); the length must match the country's
  entry in the IBAN registry (the whole registry as we know it, which includes every SEPA country
  and GB) and mod-97 must equal 1.
* **National ids** (``detail``): ``us_ssn`` (``123-45-6789``; SSA rules: area not 000/666/9xx,
  group not 00, serial not 0000; bare or space-separated only after an ``SSN`` keyword);
  ``uk_nino`` (``AB 12 34 56 C`` / ``AB123456C``, HMRC prefix rules: first letter not D F I Q U V,
  second not D F I O Q U V, not BG GB KN NK NT TN ZZ, suffix A-D; so the HMRC placeholder
  ``QQ 12 34 56 C`` is *not* reported, it is never issued to a person); ``es_dni``
  (``12345678Z``, mod-23 letter); ``es_nie`` (``X1234567L``, mod-23 letter); ``it_codice_fiscale``
  (``RSSMRA85T10A562S``, check character); ``in_aadhaar`` (``2345 6789 0124``, grouped 4-4-4, first
  digit 2-9, Verhoeff check); ``nl_bsn`` (9 digits, 11-check, only after a ``BSN`` /
  ``burgerservicenummer`` / ``sofinummer`` keyword, because one in eleven random 9-digit numbers
  passes the 11-check).

Overlaps are resolved by trust: an email beats a card, a card beats an IBAN, an IBAN beats a
national id, a national id beats a phone; within one kind the longer match wins.

Speed: 10 MB of ordinary English prose full of years, decimals, dates, times and ids, with no PII,
takes ~0.35 s on one core (whole, or in 500-character parts), because the number patterns only run
in small windows around runs of 6+ digits (see ``_NUMERIC_RUN_RE``) and emails only from each "@".
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn, numdb, verhoeff
from stdnum.es import dni, nie
from stdnum.it import codicefiscale
from stdnum.nl import bsn
from stdnum.us import ssn

__all__ = ["KINDS", "PiiMatch", "find_pii", "mask", "redact"]

KINDS: tuple[str, ...] = ("email", "phone", "card", "iban", "national_id")

# Lower number = more trusted when two matches overlap.
_PRIORITY: dict[str, int] = {"email": 0, "card": 1, "iban": 2, "national_id": 3, "phone": 4}


@dataclass(frozen=True)
class PiiMatch:
    """One piece of personal data found in a text: ``text == source[start:end]``."""

    kind: str  # one of KINDS
    start: int
    end: int
    text: str
    detail: str | None = None  # e.g. "us_ssn", "uk_nino", "visa", "GB", "international"


# --------------------------------------------------------------------------------------------------
# Validators
# --------------------------------------------------------------------------------------------------


def _card_brand(digits: str) -> str | None:
    """The card network from the issuer prefix and length; None when no major network issues such a
    number. This, on top of Luhn, keeps ids and timestamps that happen to pass Luhn out."""
    n, two, four = len(digits), int(digits[:2]), int(digits[:4])
    if digits[0] == "4":
        return "visa" if n in (13, 16, 19) else None
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return "mastercard" if n == 16 else None
    if two in (34, 37):
        return "amex" if n == 15 else None
    if two in (30, 36, 38, 39):
        return "diners" if 14 <= n <= 19 else None
    if 3528 <= four <= 3589:
        return "jcb" if 16 <= n <= 19 else None
    if two == 62:
        return "unionpay" if 16 <= n <= 19 else None
    if four == 6011 or two in (64, 65):
        return "discover" if 16 <= n <= 19 else None
    if two == 50 or 56 <= two <= 69:
        return "maestro"
    return None


def _iban_lengths() -> dict[str, int]:
    """IBAN length per country, from python-stdnum's copy of the SWIFT IBAN registry."""
    lengths: dict[str, int] = {}
    for _, lo, hi, props, _ in numdb.get("iban").prefixes:
        bban = props.get("bban", "")
        if lo == hi and bban and re.fullmatch(r"(?:[0-9]+![nace])+", bban):
            lengths[lo] = 4 + sum(int(n) for n in re.findall(r"([0-9]+)!", bban))
    return lengths


_IBAN_LENGTHS: dict[str, int] = _iban_lengths()


def _iban_ok(iban: str) -> bool:
    """The country's length, then mod-97 and the registry's BBAN format (stdnum); the national
    check digits some countries add inside the BBAN are not checked (``check_country=False``)."""
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban[2:4].isdigit():
        return False
    return stdnum_iban.is_valid(iban, check_country=False)


def _phone_ok(candidate: str, regions: tuple[str, ...]) -> bool:
    """phonenumbers' matcher reads all of the candidate's digits as one possible number of one of
    ``regions`` (``ZZ``: the number carries its own +country code)."""
    digits = _digits(candidate)
    for region in regions:
        for m in phonenumbers.PhoneNumberMatcher(candidate, region, leniency=phonenumbers.Leniency.POSSIBLE):
            if _digits(m.raw_string) == digits:
                return True
    return False


def _digits(s: str) -> str:
    return "".join(ch for ch in s if ch.isdigit())


# --------------------------------------------------------------------------------------------------
# Patterns. Every pattern is anchored on both sides so it never matches a piece of a longer token or
# a run of numbers (a table row, a list, a date followed by a time). The left edge is a lookbehind
# placed *after* the first character ("[0-9](?<![\w.][0-9])" rather than "(?<![\w.])[0-9]"): a
# pattern that starts with a plain character set lets CPython's re skip ahead to candidate
# characters, one that starts with an assertion is tried at every position, 3-4x slower.
# Digits are written [0-9]: \d would also accept other scripts' digits.
# --------------------------------------------------------------------------------------------------


def _first(first: str, *not_before: str) -> str:
    """``first`` (one character class) followed by "and it was not preceded by any of ``not_before``"."""
    return first + "".join(f"(?<!{nb}{first})" for nb in not_before)


_EMAIL_RE = re.compile(
    r"[A-Za-z0-9_%+\-](?<![\w.%+\-][A-Za-z0-9_%+\-])[A-Za-z0-9_%+\-]*(?:\.[A-Za-z0-9_%+\-]+)*"
    r"@"
    r"((?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,24}))"
    r"(?![\w\-]|\.[A-Za-z0-9])"
)
_EMAIL_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_%+-.")
_EMAIL_LOCAL_MAX = 64  # RFC 5321 limits
_EMAIL_DOMAIN_MAX = 255
# "icon@2x.png", "logo@1.5x.jpg": resolution suffixes of asset files, not addresses.
_RETINA_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?x\.", re.IGNORECASE)
_FILE_TLDS = frozenset(
    "png jpg jpeg gif svg webp bmp tif tiff ico heic heif avif psd raw txt csv json yaml yml pdf".split()
)

_CARD_RE = re.compile(
    _first("[2-6]", r"[\w\-.+/]", r"[0-9][ \-]") + r"(?:[ \-]?[0-9]){12,18}(?![\w]|[\-.][0-9]|[ \-][0-9]{4})"
)
_CARD_SEP_RE = re.compile(r"[ \-]")

_IBAN_RE = re.compile(_first("[A-Z]", "[A-Za-z0-9]") + r"[A-Z][0-9]{2}(?: ?[A-Z0-9]){10,32}")

# Phones: not inside a word or id, not after "+", not continuing a decimal, a date/time or a list
# of numbers. Spaces are left to _in_spaced_run: "555-123-4567 555-987-6543" are two phones, but
# "100 200 3000 4000" is a table row, not "200 300 4000" with a neighbour on each side.
_PH_NOT_BEFORE = (r"[\w+]", r"[0-9][,.\-/:]")
_PH_AFTER = r"(?![\w]|[.\-/]\(?[0-9])"
_DIGIT_SPACE_DIGIT_RE = re.compile(r"[0-9] [0-9]")
_PHONE_INTL_RE = re.compile(
    r"(?:" + _first(r"\+", *_PH_NOT_BEFORE) + "|" + _first("0", *_PH_NOT_BEFORE) + "0)"
    r"[1-9](?:[ .\-]?\(?[0-9]\)?){7,14}" + _PH_AFTER
)
# NANP: the optional "1-" / "+1 " in front and the number-list edge rule are checked by hand in
# _phones (_NANP_PREFIX_RE, _clean_left), so that the pattern can start with a plain character.
_PHONE_NANP_RE = re.compile(
    r"(?:" + _first(r"\(", r"[\w+]") + r"[2-9][0-9]{2}\) ?[0-9]{3}[ .\-]"
    r"|" + _first("[2-9]", r"[\w+]") + r"[0-9]{2}(?P<s>[ .\-])[0-9]{3}(?P=s))[0-9]{4}" + _PH_AFTER
)
_NANP_PREFIX_RE = re.compile(r"\+?1[ .\-]?$")
_PHONE_NATIONAL_RE = re.compile(_first("0", *_PH_NOT_BEFORE) + r"[1-9](?:[ .\-]?[0-9]){8,9}" + _PH_AFTER)
_PHONE_SEP_RE = re.compile(r"[ .\-]")
# Where a national number with a 0 trunk prefix is read: the UK, France, Germany.
_TRUNK_REGIONS = ("GB", "FR", "DE")

_ID_NOT_BEFORE = r"[\w\-.]"
_ID_AFTER = r"(?![\w]|[\-.][0-9])"
_SSN_RE = re.compile("(" + _first("[0-9]", _ID_NOT_BEFORE) + r"[0-9]{2})-([0-9]{2})-([0-9]{4})" + _ID_AFTER)
_SSN_BARE_RE = re.compile(
    "(" + _first("[0-9]", _ID_NOT_BEFORE) + r"[0-9]{2}) ?([0-9]{2}) ?([0-9]{4})(?![\w]|[\-. ][0-9])"
)
_SSN_KEYWORD_RE = re.compile(r"\b(?:SSN|social security(?: number| no\.?)?)\W{0,5}$", re.IGNORECASE)
_NINO_RE = re.compile(
    _first("[A-CEGHJ-PR-TW-Z]", "[A-Za-z0-9]")
    + r"[A-CEGHJ-NPR-TW-Z](?<!BG|GB|KN|NK|NT|TN|ZZ) ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D](?![A-Za-z0-9])"
)
_DNI_RE = re.compile(
    "(" + _first("[0-9]", _ID_NOT_BEFORE) + r"(?:[0-9]{7}|[0-9]\.[0-9]{3}\.[0-9]{3}))[ \-]?([A-Z])(?![\w])"
)
_NIE_RE = re.compile("(" + _first("[XYZ]", _ID_NOT_BEFORE) + r")[ \-]?([0-9]{7})[ \-]?([A-Z])(?![\w])")
_CF_RE = re.compile(
    _first("[A-Z]", "[A-Za-z0-9]")
    + r"[A-Z]{5}[0-9LMNP-V]{2}[ABCDEHLMPRST][0-9LMNP-V]{2}[A-Z][0-9LMNP-V]{3}[A-Z](?![A-Za-z0-9])"
)
_AADHAAR_RE = re.compile(
    _first("[2-9]", _ID_NOT_BEFORE) + r"[0-9]{3}([ \-])[0-9]{4}\1[0-9]{4}(?![\w]|[ \-.][0-9])"
)
_BSN_RE = re.compile(
    _first("[0-9]", _ID_NOT_BEFORE)
    + r"(?:[0-9]{8}|[0-9]{3}\.[0-9]{2}\.[0-9]{3}|[0-9]{2}([ .])[0-9]{3}\1[0-9]{3})(?![\w]|[\-. ][0-9])"
)
_BSN_KEYWORD_RE = re.compile(
    r"\b(?:BSN|burgerservicenummer|sofi-?nummer)(?:\s*(?:nr|nummer)\.?)?\W{0,5}$", re.IGNORECASE
)
_KEYWORD_WINDOW = 40
# Every number-based kind (cards, phones, all ids but the codice fiscale) has a run of at least six
# digits with at most two separator characters between neighbours (a NINO has 6, the rest more).
# Ordinary text has few such runs (dates, long numbers), so the number patterns only run in a small
# window around each; one scan for runs replaces a dozen scans of every digit in the text.
_NUMERIC_RUN_RE = re.compile(r"[0-9](?:[ .\-/()]{0,2}[0-9]){5,}")
# Room for what a pattern needs outside the run: "+", "(", a NIE's "X-" or a NINO's "AB " before it;
# a DNI/NINO letter and the lookahead edge checks after it. Lookbehinds see before a window anyway.
_WINDOW_MARGIN = 8


# --------------------------------------------------------------------------------------------------
# Detectors: each yields validated candidates; overlaps are resolved later.
# --------------------------------------------------------------------------------------------------


def _scan(pattern: re.Pattern[str], text: str, windows: list[tuple[int, int]]) -> Iterator[re.Match[str]]:
    for lo, hi in windows:
        yield from pattern.finditer(text, lo, hi)


def _emails(text: str) -> Iterator[PiiMatch]:
    """Emails, matched only from each "@": English text has few, and trying every word as a local
    part costs more than all the other patterns together. The local part is found by walking back
    from the "@" (at most 64 characters, the RFC 5321 limit), so even a text of "@"s stays linear."""
    n = len(text)
    at = text.find("@")
    while at != -1:
        start = at
        while start > 0 and at - start <= _EMAIL_LOCAL_MAX and text[start - 1] in _EMAIL_LOCAL_CHARS:
            start -= 1
        if start < at and at - start <= _EMAIL_LOCAL_MAX:
            hi = min(n, at + _EMAIL_DOMAIN_MAX + 2)
            m = _EMAIL_RE.match(text, start, hi)
            if m is not None and hi < n and m.end() >= hi - 1:
                m = _EMAIL_RE.match(text, start)  # the window cut the domain: look again, uncut
            if m is not None:
                domain, tld = m.group(1), m.group(2)
                if tld.lower() not in _FILE_TLDS and not _RETINA_RE.match(domain):
                    yield PiiMatch("email", m.start(), m.end(), m.group())
        at = text.find("@", at + 1)


def _cards(text: str, windows: list[tuple[int, int]]) -> Iterator[PiiMatch]:
    for m in _scan(_CARD_RE, text, windows):
        s = m.group()
        digits = _digits(s)
        if not luhn.is_valid(digits) or (brand := _card_brand(digits)) is None:
            continue
        if len(digits) != len(s):
            # Written in groups: one kind of separator, the usual 4-4-4-4(-3) / 4-6-5 / 4-6-4 shapes,
            # so that "2023-05-17 2024-06-15" and other runs of numbers are not taken for a card.
            seps = set(_CARD_SEP_RE.findall(s))
            groups = [len(g) for g in _CARD_SEP_RE.split(s)]
            if len(seps) != 1 or groups[0] != 4 or not all(4 <= g <= 6 for g in groups[1:-1]):
                continue
        yield PiiMatch("card", m.start(), m.end(), s, brand)


def _ibans(text: str) -> Iterator[PiiMatch]:
    pos = 0
    while (m := _IBAN_RE.search(text, pos)) is not None:
        start = m.start()
        pos = start + 1
        want = _IBAN_LENGTHS.get(text[start : start + 2])
        if want is None:
            continue
        # The pattern is greedy; cut the candidate at the country's length (it may have run on into
        # a following upper-case word), then require a clean edge there.
        chars: list[str] = []
        end = start
        for i in range(start, m.end()):
            if text[i] != " ":
                chars.append(text[i])
                if len(chars) == want:
                    end = i + 1
                    break
        if len(chars) != want or (end < len(text) and text[end].isalnum()):
            continue
        iban = "".join(chars)
        if _iban_ok(iban):
            pos = end
            yield PiiMatch("iban", start, end, text[start:end], iban[:2])


def _clean_left(text: str, start: int) -> bool:
    """The phone edge rule of _PH_NOT_BEFORE, for a start found by hand."""
    before = text[start - 1] if start >= 1 else ""
    if before and (before.isalnum() or before in "_+"):
        return False
    return not (before and before in ",.-/:" and start >= 2 and text[start - 2].isdigit())


def _in_spaced_run(text: str, start: int, end: int) -> bool:
    """A phone written with spaces between digit groups, with another number right before or after
    it across one space, is part of a list of numbers ("100 200 3000 4000", "12 34 56 78 90 12").
    A leading "+" marks a start, whatever is before it."""
    if _DIGIT_SPACE_DIGIT_RE.search(text, start, end) is None:
        return False
    before = text[max(0, start - 2) : start] if text[start] != "+" else ""
    after = text[end : end + 3]
    return (before[1:] == " " and before[:1].isdigit()) or (
        after[:1] == " " and (after[1:2].isdigit() or (after[1:2] == "(" and after[2:3].isdigit()))
    )


def _phones(text: str, windows: list[tuple[int, int]]) -> Iterator[PiiMatch]:
    for m in _scan(_PHONE_INTL_RE, text, windows):
        s = m.group()
        n = len(_digits(s)) - (2 if s.startswith("00") else 0)
        if not 9 <= n <= 15:
            continue
        if s.startswith("00") and (
            s.count(" ") + s.count("-") < 2
            or "." in s
            or text[m.start() - 1 : m.start()] == "."
            or all(len(g) == 4 for g in _PHONE_SEP_RE.split(s))
        ):
            # "00" is also how zero-padded ids and hex code points start ("00123456789",
            # "0020.0002.0021", "0069 0307 0301"): only a spaced or dashed "0044 20 7946 0958" counts.
            continue
        regions = (
            ("GB",) if s.startswith("00") else ("ZZ",)
        )  # 00: the international prefix of GB and most of Europe
        if not _in_spaced_run(text, m.start(), m.end()) and _phone_ok(s, regions):
            yield PiiMatch("phone", m.start(), m.end(), s, "international")
    for m in _scan(_PHONE_NANP_RE, text, windows):
        start = m.start()
        prefix = _NANP_PREFIX_RE.search(text, max(0, start - 3), start)
        if prefix is not None and _clean_left(text, prefix.start()):
            start = prefix.start()
        elif not _clean_left(text, start):
            continue
        if not _in_spaced_run(text, start, m.end()) and _phone_ok(text[start : m.end()], ("US",)):
            yield PiiMatch("phone", start, m.end(), text[start : m.end()], "nanp")
    for m in _scan(_PHONE_NATIONAL_RE, text, windows):
        s = m.group()
        groups = _PHONE_SEP_RE.split(s)
        # One kind of separator and no one-digit groups: "01 23 45 67 89" yes, "04 2023-02-20" no.
        # Unbroken, only the 11 digits of a UK number ("07700900123"): a bare 10-digit number that
        # starts with 0 is as often an ISBN-10 or a numeric commit hash.
        if len(groups) == 1 and len(s) != 11:
            continue
        if (
            len(set(_PHONE_SEP_RE.findall(s))) <= 1
            and all(len(g) >= 2 for g in groups)
            and not _in_spaced_run(text, m.start(), m.end())
            and _phone_ok(s, _TRUNK_REGIONS)
        ):
            yield PiiMatch("phone", m.start(), m.end(), s, "national")


def _after_keyword(text: str, start: int, keyword: re.Pattern[str]) -> bool:
    return keyword.search(text, max(0, start - _KEYWORD_WINDOW), start) is not None


def _codici_fiscali(text: str) -> Iterator[PiiMatch]:
    """Scanned on the whole text: a codice fiscale can have its digits replaced by letters
    (omocodia), so it need not contain a run of digits."""
    for m in _CF_RE.finditer(text):
        if codicefiscale.is_valid(m.group()):
            yield PiiMatch("national_id", m.start(), m.end(), m.group(), "it_codice_fiscale")


def _short_ids(text: str, windows: list[tuple[int, int]]) -> Iterator[PiiMatch]:
    for m in _scan(_NINO_RE, text, windows):
        yield PiiMatch("national_id", m.start(), m.end(), m.group(), "uk_nino")
    for m in _scan(_DNI_RE, text, windows):
        if dni.is_valid(m.group(1).replace(".", "") + m.group(2)):
            yield PiiMatch("national_id", m.start(), m.end(), m.group(), "es_dni")
    for m in _scan(_NIE_RE, text, windows):
        prefix, number, letter = m.groups()
        if nie.is_valid(prefix + number + letter):
            yield PiiMatch("national_id", m.start(), m.end(), m.group(), "es_nie")


def _long_ids(text: str, windows: list[tuple[int, int]]) -> Iterator[PiiMatch]:
    for m in _scan(_SSN_RE, text, windows):
        if ssn.is_valid("-".join(m.groups())):
            yield PiiMatch("national_id", m.start(), m.end(), m.group(), "us_ssn")
    for m in _scan(_SSN_BARE_RE, text, windows):
        if ssn.is_valid("-".join(m.groups())) and _after_keyword(text, m.start(), _SSN_KEYWORD_RE):
            yield PiiMatch("national_id", m.start(), m.end(), m.group(), "us_ssn")
    for m in _scan(_AADHAAR_RE, text, windows):
        if verhoeff.is_valid(_digits(m.group())):
            yield PiiMatch("national_id", m.start(), m.end(), m.group(), "in_aadhaar")
    for m in _scan(_BSN_RE, text, windows):
        digits = _digits(m.group())
        if len(digits) == 9 and bsn.is_valid(digits) and _after_keyword(text, m.start(), _BSN_KEYWORD_RE):
            yield PiiMatch("national_id", m.start(), m.end(), m.group(), "nl_bsn")


def _merge_window(windows: list[tuple[int, int]], lo: int, hi: int) -> None:
    if windows and lo <= windows[-1][1]:
        windows[-1] = (windows[-1][0], hi)
    else:
        windows.append((lo, hi))


def _numeric_windows(text: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Disjoint (start, end) windows around every run of 6+ digits, and around every run of 9+.

    Only NINOs (6 digits), NIEs (7) and DNIs (8) fit in a short run; cards, phones, SSNs, BSNs and
    Aadhaar numbers need 9 or more, so the many 8-digit dates only get the three short patterns."""
    short: list[tuple[int, int]] = []
    long: list[tuple[int, int]] = []
    n = len(text)
    for m in _NUMERIC_RUN_RE.finditer(text):
        lo, hi = max(0, m.start() - _WINDOW_MARGIN), min(n, m.end() + _WINDOW_MARGIN)
        _merge_window(short, lo, hi)
        if sum(map(str.isdigit, m.group())) >= 9:
            _merge_window(long, lo, hi)
    return short, long


def _candidates(text: str) -> list[PiiMatch]:
    out = list(_emails(text))
    out.extend(_ibans(text))
    out.extend(_codici_fiscali(text))
    short, long = _numeric_windows(text)
    if short:
        out.extend(_short_ids(text, short))
    if long:
        out.extend(_cards(text, long))
        out.extend(_long_ids(text, long))
        out.extend(_phones(text, long))
    return out


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def _resolve(candidates: list[PiiMatch]) -> list[PiiMatch]:
    """Keep a non-overlapping subset: most trusted kind first, then the longest, then the earliest."""
    candidates.sort(key=lambda c: (_PRIORITY[c.kind], c.start - c.end, c.start))
    starts: list[int] = []  # accepted intervals, sorted and disjoint, so ends are sorted too
    ends: list[int] = []
    kept: list[PiiMatch] = []
    for c in candidates:
        i = bisect.bisect_right(starts, c.start)
        if i > 0 and ends[i - 1] > c.start:
            continue  # overlaps the accepted interval starting at or before it
        if i < len(starts) and starts[i] < c.end:
            continue  # overlaps the next accepted interval
        starts.insert(i, c.start)
        ends.insert(i, c.end)
        kept.insert(i, c)
    return kept


def find_pii(text: str, kinds: Collection[str] | None = None) -> list[PiiMatch]:
    """All PII in ``text``, sorted by start and non-overlapping.

    ``kinds`` restricts what is *reported*; every detector still runs, so a card number is not
    reported as a phone number just because only phones were asked for.
    """
    if isinstance(kinds, str):
        kinds = (kinds,)
    if kinds is not None:
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown PII kind(s) {sorted(unknown)}; expected some of {list(KINDS)}")
    if not text:
        return []
    kept = _resolve(_candidates(text))
    if kinds is not None:
        wanted = set(kinds)
        kept = [m for m in kept if m.kind in wanted]
    return kept


def redact(text: str, matches: Sequence[PiiMatch] | None = None) -> str:
    """``text`` with each match replaced by ``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IBAN]`` or
    ``[NATIONAL_ID]``. Without ``matches`` the text is scanned with ``find_pii``. Overlapping matches
    (possible when a caller passes its own) are reduced to the first of each overlapping run."""
    if matches is None:
        matches = find_pii(text)
    parts: list[str] = []
    pos = 0
    for m in sorted(matches, key=lambda m: (m.start, -m.end)):
        if m.start < pos:
            continue
        parts.append(text[pos : m.start])
        parts.append(f"[{m.kind.upper()}]")
        pos = m.end
    parts.append(text[pos:])
    return "".join(parts)


def _mask_email(s: str) -> str:
    local, _, domain = s.rpartition("@")
    head = local[0] if len(local) >= 3 else ""
    label, _, rest = domain.partition(".")
    tld = domain.rsplit(".", 1)[-1] if rest else ""
    dom = (label[0] if len(label) >= 3 else "") + "***"
    return f"{head}***@{dom}" + (f".{tld}" if tld else "")


def mask(match_text: str) -> str:
    """A preview of a match that is safe to put in a report: it never contains the whole value.

    Emails keep the first letter of the local part and of the domain and the TLD
    (``john@example.com`` -> ``j***@e***.com``). Everything else keeps its layout (separators,
    ``+``, brackets) and shows at most the last 4 of 12+ letters/digits, the last 2 of 8-11, and
    none of shorter values (``4111 1111 1111 1111`` -> ``**** **** **** 1111``,
    ``123-45-6789`` -> ``***-**-**89``): enough to find the value in the record, not to use it.
    """
    if "@" in match_text:
        return _mask_email(match_text)
    n = sum(ch.isalnum() for ch in match_text)
    keep = 4 if n >= 12 else 2 if n >= 8 else 0
    out: list[str] = []
    seen = 0
    for ch in match_text:
        if ch.isalnum():
            seen += 1
            out.append(ch if seen > n - keep else "*")
        else:
            out.append(ch)
    return "".join(out)
