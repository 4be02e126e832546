"""Image checks on one record's images, from the per-file inspection (tuneline.data.images).

image_missing / unreadable / truncated / format_unsupported / too_large come from the inspection
itself (fatal for the file); image_too_small, image_aspect_extreme and image_mode_converted are
decided here from the header facts and the configured limits.
"""

from __future__ import annotations

from pathlib import Path

from tuneline.config.schema import ImagesConfig
from tuneline.data.findings import Finding
from tuneline.data.records import Record


def check(records: list[Record], infos: dict, cfg: ImagesConfig) -> list[Finding]:
    out: list[Finding] = []
    for rec in records:
        for path in rec.images:
            info = infos[path]
            name = Path(path).name
            if info.error:
                out.append(
                    Finding(info.error, "error", f"{name}: {info.message}", rec.id, rec.source, "image")
                )
                continue
            w, h = info.width, info.height
            if min(w, h) < cfg.min_side:
                out.append(
                    Finding(
                        "image_too_small",
                        "error",
                        f"{name} is {w}x{h}, shorter side below data.images.min_side={cfg.min_side}",
                        rec.id,
                        rec.source,
                        "image",
                    )
                )
            elif max(w, h) / max(min(w, h), 1) > cfg.max_aspect:
                out.append(
                    Finding(
                        "image_aspect_extreme",
                        "error",
                        f"{name} is {w}x{h}, aspect ratio "
                        f"{max(w, h) / min(w, h):.1f} above data.images.max_aspect={cfg.max_aspect:g}",
                        rec.id,
                        rec.source,
                        "image",
                    )
                )
            if info.conversions:
                out.append(
                    Finding(
                        "image_mode_converted",
                        "info",
                        f"{name}: {', '.join(info.conversions)} (normalised in the snapshot)",
                        rec.id,
                        rec.source,
                        "image",
                    )
                )
    return out
