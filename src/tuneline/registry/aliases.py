"""Promotion and rollback on MLflow registry aliases: ``champion`` moves only through the gate.

    tuneline models promote NAME [VERSION] [--force --reason TEXT]
    tuneline models rollback NAME

Aliases: ``challenger`` (the newest registered version), ``champion`` (what serves), and
``previous-champion`` (where a rollback goes). The registered model's tag ``tuneline.champion_history``
holds the champions in order (a JSON list, newest last), so repeated rollbacks walk back through it;
``tuneline.alias_seq`` counts the changes.

Concurrency: a change runs under a registry-side lock, a registered model named ``<NAME>.tuneline-lock``
that only one writer can create (the store's unique name is the compare-and-swap; it works the same on
SQLite and on a tracking server). A second promote waits for the first and then runs on the new state,
or, after ``lock_timeout`` seconds, fails with a RegistryError that names the holder. After writing,
the state is read back and checked. If a write fails half way, what was written is put back, so a
failed command leaves the registry as it was.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tuneline.errors import GateFailed, RegistryError

log = logging.getLogger("tuneline.registry")

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous-champion"
HISTORY_TAG = "tuneline.champion_history"
SEQ_TAG = "tuneline.alias_seq"
LOCK_SUFFIX = ".tuneline-lock"
LOCK_STALE_S = 600.0  # a lock older than this was left by a crashed process: broken with a warning
HISTORY_MAX_CHARS = 4500  # registry tag values are limited (5,000 characters on SQL stores)


@dataclass(frozen=True)
class AliasChange:
    """What a promote or rollback did."""

    name: str
    action: str  # "promote", "rollback" or "unchanged"
    champion: str | None
    previous_champion: str | None
    forced: bool = False
    reason: str | None = None
    seq: int = 0
    history: list[str] = field(default_factory=list)


def user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database in some containers
        return os.environ.get("USER") or f"uid-{os.getuid()}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _code(exc: BaseException) -> str | None:
    return getattr(exc, "error_code", None)


# ---------------------------------------------------------------- lock
@contextmanager
def registry_lock(c, name: str, timeout: float = 30.0) -> Iterator[str]:
    """Hold the change lock of registered model ``name`` (see the module docstring)."""
    lock = f"{name}{LOCK_SUFFIX}"
    token = secrets.token_hex(8)
    holder = f"{user()}@{socket.gethostname()} pid {os.getpid()}"
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            c.create_registered_model(
                lock,
                tags={
                    "tuneline.lock_for": name,
                    "tuneline.lock_token": token,
                    "tuneline.lock_holder": holder,
                },
                description=f"tuneline: alias change of {name} in progress ({holder}); removed when done.",
            )
            break
        except Exception as exc:  # noqa: BLE001 - "already exists", or a busy SQLite file: retry
            last = exc
            if _code(exc) == "RESOURCE_ALREADY_EXISTS" and _break_if_stale(c, lock):
                continue
        if time.monotonic() > deadline:
            who = _lock_holder(c, lock)
            raise RegistryError(
                f"registered model {name!r} is being changed by {who or 'another process'}; "
                f"gave up after {timeout:g} s ({last})",
                hint=f"retry; if no promote/rollback is running, delete the registered model {lock!r}",
            ) from last
        time.sleep(0.02 + random.random() * 0.08)
    try:
        yield token
    finally:
        try:
            c.delete_registered_model(lock)
        except Exception as exc:  # noqa: BLE001 - the next writer breaks it when stale
            log.warning("could not release the lock %s: %s", lock, exc)


def _lock_holder(c, lock: str) -> str | None:
    try:
        return c.get_registered_model(lock).tags.get("tuneline.lock_holder")
    except Exception:  # noqa: BLE001
        return None


def _break_if_stale(c, lock: str) -> bool:
    try:
        rm = c.get_registered_model(lock)
    except Exception:  # noqa: BLE001 - released meanwhile
        return True
    age = time.time() - (rm.creation_timestamp or 0) / 1000
    if age < LOCK_STALE_S:
        return False
    log.warning(
        "breaking a stale registry lock %s (%.0f s old, %s)", lock, age, rm.tags.get("tuneline.lock_holder")
    )
    try:
        c.delete_registered_model(lock)
    except Exception:  # noqa: BLE001
        pass
    return True


# ---------------------------------------------------------------- state
@dataclass
class _State:
    aliases: dict[str, str]
    history: list[dict[str, Any]]
    seq: int

    @property
    def champion(self) -> str | None:
        return self.aliases.get(CHAMPION)

    def versions(self) -> list[str]:
        return [h["version"] for h in self.history]


def _registered(c, name: str):
    try:
        return c.get_registered_model(name)
    except Exception as exc:  # noqa: BLE001
        if _code(exc) == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(
                f"no registered model named {name!r}",
                hint="`tuneline models register RUN_DIR` (or `tuneline run`) creates it; "
                "check --tracking-uri",
            ) from exc
        raise RegistryError(f"cannot read registered model {name!r}: {exc}") from exc


def read_state(c, name: str) -> _State:
    rm = _registered(c, name)
    tags = dict(rm.tags or {})
    try:
        history = json.loads(tags.get(HISTORY_TAG) or "[]")
    except ValueError:
        log.warning("unreadable %s on %s: starting a new history", HISTORY_TAG, name)
        history = []
    return _State({k: str(v) for k, v in (rm.aliases or {}).items()}, history, int(tags.get(SEQ_TAG) or 0))


def _adopt(state: _State) -> None:
    """Make the history agree with the champion alias when something else moved it (the MLflow UI, or an
    earlier command that died between writing the aliases and the history)."""
    champ = state.champion
    versions = state.versions()
    if champ is None or (versions and versions[-1] == champ):
        return
    if len(versions) >= 2 and versions[-2] == champ:  # an interrupted rollback
        state.history.pop()
    else:
        state.history.append({"version": champ, "at": _now(), "by": "unknown", "action": "adopted"})
    log.warning("champion alias of version %s was set outside tuneline: history adjusted", champ)


def _trimmed(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = list(history)
    while len(out) > 2 and len(json.dumps(out)) > HISTORY_MAX_CHARS:
        out.pop(0)
    return out


def _write(c, name: str, before: _State, history: list[dict[str, Any]], extra_aliases: dict[str, str | None]):
    """Aliases first, then the history and counter (the commit point); on failure, put the old back."""
    versions = [h["version"] for h in history]
    wanted: dict[str, str | None] = {
        CHAMPION: versions[-1] if versions else None,
        PREVIOUS: versions[-2] if len(versions) >= 2 else None,
        **extra_aliases,
    }
    done: list[str] = []  # what was written, so that a failure puts back only that
    try:
        for alias, version in wanted.items():
            if before.aliases.get(alias) != version:
                _set_alias(c, name, alias, version)
                done.append(alias)
        c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(_trimmed(history)))
        done.append(HISTORY_TAG)
        c.set_registered_model_tag(name, SEQ_TAG, str(before.seq + 1))
    except Exception as exc:  # noqa: BLE001
        restored = _restore(c, name, before, done)
        raise RegistryError(
            f"the registry failed while moving aliases of {name!r}: {exc}",
            hint="nothing was changed; retry"
            if restored
            else "the old state could not be put back either: run the command again once the registry "
            "answers (tuneline repairs a half-written change)",
        ) from exc
    return wanted


def _set_alias(c, name: str, alias: str, version: str | None) -> None:
    if version is None:
        try:
            c.delete_registered_model_alias(name, alias)
        except Exception as exc:  # noqa: BLE001
            if _code(exc) not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
    else:
        c.set_registered_model_alias(name, alias, version)


def _restore(c, name: str, before: _State, done: list[str]) -> bool:
    try:
        for what in reversed(done):
            if what == HISTORY_TAG:
                c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(before.history))
            else:
                _set_alias(c, name, what, before.aliases.get(what))
        return True
    except Exception as exc:  # noqa: BLE001
        log.error("could not restore the aliases of %s: %s", name, exc)
        return False


def _verify(c, name: str, wanted: dict[str, str | None], seq: int) -> _State:
    after = read_state(c, name)
    wrong = {a: (v, after.aliases.get(a)) for a, v in wanted.items() if after.aliases.get(a) != v}
    if wrong or after.seq != seq:
        raise RegistryError(
            f"registered model {name!r} changed while tuneline was moving its aliases "
            f"(expected {wanted}, change {seq}; found {after.aliases}, change {after.seq})",
            hint="something else writes these aliases (the MLflow UI, another tool): check "
            "`tuneline models list` and retry",
        )
    return after


@contextmanager
def _version_tags(c, name: str, version: str, tags: dict[str, str]) -> Iterator[None]:
    """Set the version's record of the change; put the old values back if the change then fails."""
    old = dict(c.get_model_version(name, version).tags or {})
    try:
        for k, val in tags.items():
            c.set_model_version_tag(name, version, k, val)
        yield
    except BaseException:
        for k in tags:
            try:
                if k in old:
                    c.set_model_version_tag(name, version, k, old[k])
                else:
                    c.delete_model_version_tag(name, version, k)
            except Exception as exc:  # noqa: BLE001
                log.error("could not restore tag %s of %s version %s: %s", k, name, version, exc)
        raise


def set_challenger(c, name: str, version: str, lock_timeout: float = 30.0) -> None:
    """Point ``challenger`` at a newly registered version (under the lock: a promote running at the same
    time must not remove it by mistake)."""
    with registry_lock(c, name, lock_timeout):
        c.set_registered_model_alias(name, CHALLENGER, str(version))


# ---------------------------------------------------------------- promote / rollback
def _version(c, name: str, version: str | None, aliases: dict[str, str]):
    if version is None:
        version = aliases.get(CHALLENGER)
        if version is None:
            raise RegistryError(
                f"{name!r} has no {CHALLENGER} and no VERSION was given",
                hint=f"name the version: tuneline models promote {name} VERSION",
            )
    try:
        return c.get_model_version(name, str(version))
    except Exception as exc:  # noqa: BLE001
        raise RegistryError(
            f"{name!r} has no version {version}: {exc}", hint=f"see `tuneline models list {name}`"
        ) from exc


def promote(
    c,
    name: str,
    version: str | None = None,
    *,
    force: bool = False,
    reason: str | None = None,
    lock_timeout: float = 30.0,
) -> AliasChange:
    """Move ``champion`` to ``version`` (default: the challenger) if its gate passed, or with ``force``
    and a ``reason`` (recorded on the version with who and when)."""
    reason = (reason or "").strip()[:4000] or None  # registry tag values are limited
    if force and not reason:
        raise RegistryError(
            "a forced promotion needs a reason", hint='add --reason "why this version goes live anyway"'
        )
    with registry_lock(c, name, lock_timeout):
        state = read_state(c, name)
        mv = _version(c, name, version, state.aliases)
        v = str(mv.version)
        gate = mv.tags.get("tuneline.gate_passed")
        if gate != "true" and not force:
            why = (
                f"its gate failed ({mv.tags.get('tuneline.gate_summary', 'see its evaluation report')})"
                if gate == "false"
                else "it has no gate result (eval.gate was disabled)"
            )
            raise GateFailed(
                f"refusing to promote {name} version {v}: {why}; champion unchanged",
                hint=f'to override, record why: tuneline models promote {name} {v} --force --reason "..."',
            )
        _adopt(state)
        top = state.history[-1] if state.history else None
        if top and top["version"] == v and state.champion == v:
            if top.get("action") != "adopted":
                return AliasChange(
                    name, "unchanged", v, state.aliases.get(PREVIOUS), seq=state.seq, history=state.versions()
                )
            state.history.pop()  # a half-written earlier promote of this version: record it properly now
        who, when = user(), _now()
        entry: dict[str, Any] = {"version": v, "at": when, "by": who, "action": "promote"}
        tags = {"tuneline.promoted_at": when, "tuneline.promoted_by": who}
        if gate != "true":
            entry.update(action="forced", reason=(reason or "")[:300])
            tags.update(
                {
                    "tuneline.forced_promotion": "true",
                    "tuneline.forced_by": who,
                    "tuneline.forced_at": when,
                    "tuneline.forced_reason": reason or "",
                    "tuneline.forced_gate": gate or "none",
                }
            )
        elif reason:
            entry["reason"] = reason[:300]
            tags["tuneline.promotion_reason"] = reason
        history = [*state.history, entry]
        # The challenger became the champion: it is no longer a challenger.
        extra: dict[str, str | None] = {CHALLENGER: None} if state.aliases.get(CHALLENGER) == v else {}
        with _version_tags(c, name, v, tags):
            wanted = _write(c, name, state, history, extra)
        after = _verify(c, name, wanted, state.seq + 1)
    log.info("%s: champion is version %s (was %s)", name, v, state.champion)
    return AliasChange(
        name, "promote", v, after.aliases.get(PREVIOUS), gate != "true", reason, after.seq, after.versions()
    )


def rollback(c, name: str, *, reason: str | None = None, lock_timeout: float = 30.0) -> AliasChange:
    """``champion`` goes back to the previous champion; again and again, through the history."""
    with registry_lock(c, name, lock_timeout):
        state = read_state(c, name)
        _adopt(state)
        versions = state.versions()
        if len(versions) < 2:
            now = f"version {versions[-1]} is the first champion" if versions else "there is no champion"
            raise RegistryError(
                f"cannot roll back {name!r}: {now}, there is no earlier one",
                hint=f"promote a version instead: tuneline models promote {name} VERSION",
            )
        gone = versions[-1]
        who, when = user(), _now()
        tags = {"tuneline.rolled_back_at": when, "tuneline.rolled_back_by": who}
        if reason:
            tags["tuneline.rollback_reason"] = reason[:4000]
        with _version_tags(c, name, gone, tags):
            wanted = _write(c, name, state, state.history[:-1], {})
        after = _verify(c, name, wanted, state.seq + 1)
    log.info("%s: rolled back from version %s to %s", name, gone, after.champion)
    return AliasChange(
        name,
        "rollback",
        after.champion,
        after.aliases.get(PREVIOUS),
        False,
        reason,
        after.seq,
        after.versions(),
    )


def history(c, name: str) -> list[dict[str, Any]]:
    """The champions, oldest first (each: version, at, by, action, reason when given)."""
    return read_state(c, name).history
