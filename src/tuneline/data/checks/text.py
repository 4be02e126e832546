"""Text checks: empty prompts or answers, token budget (text + image tokens), PII."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from tuneline.data.checks.pii import find_pii, mask, redact
from tuneline.data.findings import Finding
from tuneline.data.records import Record


def empty(records: list[Record]) -> list[Finding]:
    out = []
    for rec in records:
        prompt = rec.prompt_messages
        has_text = any(p["type"] == "text" and p["text"].strip() for m in prompt for p in m["content"])
        has_image = any(p["type"] == "image" for m in prompt for p in m["content"])
        if not has_text and not has_image:
            out.append(
                Finding(
                    "text_empty",
                    "error",
                    "the prompt has no text and no image",
                    rec.id,
                    rec.source,
                    "messages",
                )
            )
        elif not rec.answer.strip():
            out.append(
                Finding(
                    "text_empty", "error", "the assistant's answer is empty", rec.id, rec.source, "messages"
                )
            )
    return out


def budget(
    records: list[Record], count_tokens: Callable[[Record], int], max_seq_length: int
) -> list[Finding]:
    out = []
    for rec in records:
        n = count_tokens(rec)
        if n > max_seq_length:
            out.append(
                Finding(
                    "token_budget_exceeded",
                    "error",
                    (
                        f"{n} tokens with image tokens, above data.max_seq_length={max_seq_length} "
                        "(image tokens are never truncated)"
                        if rec.images
                        else f"{n} tokens, above data.max_seq_length={max_seq_length}: raise it, or "
                        "shorten the record"
                    ),
                    rec.id,
                    rec.source,
                    "messages",
                )
            )
    return out


def pii(records: list[Record], do_redact: bool) -> tuple[list[Finding], list[Record]]:
    """Findings for PII in any text part; with do_redact, records come back with the PII replaced."""
    findings, out = [], []
    for rec in records:
        changed = False
        messages = []
        for i, m in enumerate(rec.messages):
            parts = []
            for j, p in enumerate(m["content"]):
                if p["type"] == "text" and (matches := find_pii(p["text"])):
                    kinds = ", ".join(f"{x.kind} {mask(x.text)}" for x in matches)
                    findings.append(
                        Finding(
                            "pii_detected",
                            "error",
                            f"{kinds} in messages[{i}].content[{j}]" + (" (redacted)" if do_redact else ""),
                            rec.id,
                            rec.source,
                            f"messages[{i}].content[{j}]",
                        )
                    )
                    if do_redact:
                        p = {"type": "text", "text": redact(p["text"], matches)}
                        changed = True
                parts.append(p)
            messages.append({"role": m["role"], "content": parts})
        out.append(dataclasses.replace(rec, messages=messages) if changed else rec)
    return findings, out
