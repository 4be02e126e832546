"""PII kept out of served outputs: generated text is scanned with the data checks' detector.

``serve.pii`` says what happens when an answer contains an email, phone, card number, IBAN or
national id (``tuneline.data.checks.pii``, the detector ``pii_detected`` runs at prepare):

* ``off``: nothing is scanned.
* ``flag`` (default): the answer goes out unchanged; ``tuneline:pii_outputs_total{kind}`` counts what
  was found and a non-streamed answer carries ``X-Tuneline-PII: card,email`` (a streamed one has sent
  its headers before the text exists: the count and the access log carry it).
* ``redact``: each span is replaced by ``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IBAN]`` or
  ``[NATIONAL_ID]`` (``pii.redact``).
* ``block``: the answer is refused with a 400 in the OpenAI error shape (code ``pii_in_output``); a
  stream that already started ends with that error event instead of the text.

Streaming: the detector needs a match's right edge (``555-123-4567`` is a phone, ``555-123-45678`` is
not), so a stream is scanned over all the text generated so far and only text at least
:data:`HOLD_CHARS` characters behind the newest token is final (redact and block hold it back until
then; flag sends at once and counts what became final). A span never straddles the boundary: the
boundary moves to the start of any match it would cut. A number split across any number of chunks
is therefore caught exactly as in the whole text, for every PII value shorter than ``HOLD_CHARS``
(every kind but an email longer than that).
"""

from __future__ import annotations

from dataclasses import replace

from prometheus_client import CollectorRegistry, Counter

from tuneline.data.checks.pii import KINDS, PiiMatch, find_pii, redact
from tuneline.serving.limits import ApiError

HOLD_CHARS = 96  # longer than an IBAN (34 + 8 spaces), a grouped card (23) or a phone, with edge context
HEADER = "X-Tuneline-PII"


class PiiGuard:
    def __init__(self, mode: str, registry: CollectorRegistry) -> None:
        self.mode = mode
        self.found = Counter(
            "tuneline:pii_outputs",
            "PII spans found in generated answers, by kind (serve.pii flags, redacts or blocks them).",
            ["kind"],
            registry=registry,
        )
        for kind in KINDS:
            self.found.labels(kind)

    def _count(self, matches: list[PiiMatch]) -> None:
        for m in matches:
            self.found.labels(m.kind).inc()

    def _refusal(self, matches: list[PiiMatch]) -> ApiError:
        kinds = ", ".join(sorted({m.kind for m in matches}))
        return ApiError(
            400,
            f"the generated answer contained personal data ({kinds}) and serve.pii is block",
            code="pii_in_output",
        )

    def complete(self, text: str) -> tuple[str, dict[str, str]]:
        """A whole answer: (the text to send, headers to add); raises the refusal under ``block``."""
        if self.mode == "off":
            return text, {}
        matches = find_pii(text)
        if not matches:
            return text, {}
        self._count(matches)
        if self.mode == "block":
            raise self._refusal(matches)
        headers = {HEADER: ",".join(sorted({m.kind for m in matches}))}
        return (redact(text, matches) if self.mode == "redact" else text), headers

    def stream(self) -> StreamScan:
        return StreamScan(self)


class StreamScan:
    """One streamed answer: feed it all the text so far; it returns what may be sent now."""

    def __init__(self, guard: PiiGuard) -> None:
        self.guard = guard
        self.final = 0  # text[:final] has been scanned for good
        self.sent = 0  # text[:sent] has been passed on (flag and off send ahead of the scan)
        self.kinds: set[str] = set()

    def feed(self, text: str, *, final: bool) -> str:
        mode = self.guard.mode
        if mode == "off":
            out, self.sent = text[self.sent :], len(text)
            return out
        matches = find_pii(text)
        safe = len(text) if final else max(self.final, len(text) - HOLD_CHARS)
        for m in matches:
            if m.start < safe < m.end:
                safe = max(self.final, m.start)
        settled = [m for m in matches if self.final <= m.start and m.end <= safe]
        start, self.final = self.final, safe
        if settled:
            self.guard._count(settled)
            self.kinds.update(m.kind for m in settled)
            if mode == "block":
                raise self.guard._refusal(settled)
        if mode == "flag":
            out, self.sent = text[self.sent :], len(text)
            return out
        shifted = [replace(m, start=m.start - start, end=m.end - start) for m in settled]
        self.sent = safe
        return redact(text[start:safe], shifted) if mode == "redact" else text[start:safe]
