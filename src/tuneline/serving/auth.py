"""API keys: read from the environment variables named in serve.auth, compared in constant time."""

from __future__ import annotations

import hmac
import os

from tuneline.errors import ConfigError


class ApiKeys:
    def __init__(self, env_names: list[str]) -> None:
        missing = [name for name in env_names if not os.environ.get(name)]
        if missing:
            raise ConfigError(
                [
                    f"serve.auth.api_key_envs: environment variable {name} is not set or empty"
                    for name in missing
                ]
            )
        self._keys = [os.environ[name].encode() for name in env_names]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, authorization: str | None) -> bool:
        """True when the header carries a known key (every key is compared, so timing tells nothing)."""
        if not self._keys:
            return True
        if not authorization or not authorization.startswith("Bearer "):
            return False
        given = authorization[len("Bearer ") :].strip().encode()
        ok = False
        for key in self._keys:
            ok |= hmac.compare_digest(given, key)
        return ok
