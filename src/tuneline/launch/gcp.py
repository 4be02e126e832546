"""Google Cloud plumbing shared by the gcp-batch and vertex targets: clients, secret references."""

from __future__ import annotations

import os
import re

from tuneline.errors import ConfigError

# Set to an http:// URL to send every Google API call there (the loopback stand-in of the tests, or a
# private endpoint); with http:// the clients use anonymous credentials and the REST transport.
ENDPOINT_ENV = "TUNELINE_GCP_ENDPOINT"


def client_kwargs(default_endpoint: str | None = None) -> dict:
    endpoint = os.environ.get(ENDPOINT_ENV)
    if endpoint:
        kwargs: dict = {"transport": "rest", "client_options": {"api_endpoint": endpoint}}
        if endpoint.startswith("http://"):
            from google.auth.credentials import AnonymousCredentials

            kwargs["credentials"] = AnonymousCredentials()
        return kwargs
    if default_endpoint:
        return {"client_options": {"api_endpoint": default_endpoint}}
    return {}


def secret_version(ref: str, project: str | None, key: str) -> str:
    """S, projects/P/secrets/S or projects/P/secrets/S/versions/V -> the full version resource name."""
    if re.fullmatch(r"projects/[^/]+/secrets/[^/]+/versions/[^/]+", ref):
        return ref
    if re.fullmatch(r"projects/[^/]+/secrets/[^/]+", ref):
        return f"{ref}/versions/latest"
    if re.fullmatch(r"[A-Za-z0-9_-]+", ref):
        if not project:
            raise ConfigError(
                [f"launch.secrets.{key}: {ref!r} needs launch.project (or a full projects/... name)"]
            )
        return f"projects/{project}/secrets/{ref}/versions/latest"
    raise ConfigError(
        [
            f"launch.secrets.{key}: {ref!r} is not a Secret Manager name "
            "(S or projects/P/secrets/S[/versions/V])"
        ]
    )


def secret_versions(spec) -> dict[str, str]:
    return {name: secret_version(ref, spec.launch.project, name) for name, ref in spec.launch.secrets.items()}


def wire_document(message_cls, message) -> dict:
    """A Google Cloud client message as the JSON its REST API takes (enum names, fields without
    presence left out): what ``launch --dry-run`` prints and the tests parse back."""
    import json

    return json.loads(
        message_cls.to_json(message, use_integers_for_enums=False, always_print_fields_with_no_presence=False)
    )


def parent_note(spec) -> str:
    return f"parent projects/{spec.launch.project}/locations/{spec.launch.region}"
