"""Findings: what a data check reports about one record (or the whole dataset).

Every check has a stable code (``CHECKS``) and a default action; the config can change the
action per check. ``fail`` makes the finding an error (the record is excluded and counts towards
``data.checks.max_error_fraction``), ``drop`` removes the record with a warning, ``warn`` keeps it
with a warning. ``info`` findings (normalisations applied) never change anything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]
Action = Literal["fail", "drop", "warn", "info"]

# code -> (default action, one-line description). Order is the report's order.
CHECKS: dict[str, tuple[Action, str]] = {
    "malformed_row": ("fail", "a line or row that cannot be parsed at all"),
    "schema_error": ("fail", "a parsed row with a missing, empty or invalid field"),
    "path_outside_root": ("fail", "an image path that leaves the data folder"),
    "image_missing": ("fail", "an image file that does not exist"),
    "image_unreadable": ("fail", "a file that is not an image (empty, text, unknown format)"),
    "image_truncated": ("fail", "an image whose data ends early or is corrupt"),
    "image_format_unsupported": ("fail", "an image in a format tuneline does not accept"),
    "image_too_small": ("drop", "an image whose shorter side is below data.images.min_side"),
    "image_too_large": ("fail", "an image above data.images.max_pixels (refused before decoding)"),
    "image_aspect_extreme": ("warn", "an image whose aspect ratio exceeds data.images.max_aspect"),
    "image_mode_converted": ("info", "CMYK, palette, 16-bit, alpha or EXIF rotation normalised"),
    "duplicate_exact": ("drop", "the same image bytes as an earlier record"),
    "duplicate_near": ("warn", "a re-encoded, resized or slightly cropped copy of another image"),
    "label_conflict": ("fail", "the same or near-same input with different labels"),
    "split_leakage": ("fail", "a group or a duplicate on both sides of a split"),
    "class_imbalance": ("warn", "a class below data.checks.min_class_fraction of the records"),
    "text_empty": ("fail", "a prompt with no text and no image, or an empty answer"),
    "token_budget_exceeded": ("fail", "text plus image tokens above data.max_seq_length"),
    "pii_detected": ("warn", "an email, phone, card number, IBAN or national id in the text"),
}


@dataclass(frozen=True)
class Finding:
    check: str  # a code from CHECKS
    severity: Severity
    message: str
    record_id: str | None = None  # None for dataset-level findings (class_imbalance) and unparsable rows
    source: str | None = None  # "file:line" or "file#row=N"
    field: str | None = None
    related: tuple[str, ...] = ()  # other record ids (duplicates, conflicts, leakage)
    split: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["related"] = list(self.related)
        return d


SEVERITY_OF_ACTION: dict[str, Severity] = {
    "fail": "error",
    "drop": "warning",
    "warn": "warning",
    "info": "info",
}
