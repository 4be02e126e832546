"""What every section shares: the frozen, extra=forbid base model, the path marker and the encoding type."""

from __future__ import annotations

import codecs
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
)

# Marker for fields holding filesystem paths: the loader resolves relative values against the
# YAML file that names them (defaults, never named by a file, are relative to the working dir).
PATH_FIELD = {"tuneline_path": True}


def known_encoding(name: str) -> str:
    """``name`` if Python knows it as a text encoding (not a bytes-to-bytes codec such as zlib)."""
    try:
        codecs.lookup(name)
        "".encode(name)
    except LookupError:
        raise ValueError(f"unknown text encoding {name!r} (e.g. utf-8, latin-1, cp1252, utf-16)") from None
    return name


Encoding = Annotated[str, AfterValidator(known_encoding)]
"""A text encoding Python knows (data.sources[].encoding)."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
