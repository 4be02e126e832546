"""The offline guarantee: while a stage runs with ``run.offline``, no connection leaves the machine.

A CPython audit hook (PEP 578) sees every ``socket.connect``, ``socket.sendto``/``sendmsg`` with an
address and every ``socket.getaddrinfo`` the process makes, whichever library makes it (requests,
httpx, urllib, huggingface_hub, mlflow). Loopback addresses (127.0.0.0/8, ::1, ``localhost``) and Unix
sockets stay allowed: MLflow's SQLite store, a tracking server or a stand-in on 127.0.0.1, and
torch.distributed's gloo rendezvous on loopback keep working. Anything else raises
:class:`~tuneline.errors.OfflineViolation` naming the destination, at the call; and because a library
may swallow the error (a reachability probe that catches everything), the stage itself fails on exit
with the first attempt it saw.

Audit hooks cannot be removed, so one hook is installed for the process and acts only while a guard
is active. Connections made by native code that bypasses Python's socket module (a C library opening
its own sockets) are outside its reach; the Python-level stack of this project does not do that.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tuneline.errors import OfflineViolation

TRUTHY = {"1", "true", "yes", "on"}
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
WATCHED = {"socket.connect", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo"}


def hub_offline_env() -> bool:
    """HF_HUB_OFFLINE is set to a true value: the default for ``run.offline``."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUTHY


def resolve(setting: bool | None) -> bool:
    """``run.offline`` as configured, or (unset) on exactly when HF_HUB_OFFLINE is set."""
    return hub_offline_env() if setting is None else setting


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: list[str] = []  # stage names of the guards now entered (nested guards stack)
        self.attempts: list[str] = []  # destinations refused while a guard was active
        self.installed = False


_state = _State()


def _is_loopback_host(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host is None:
        return True  # getaddrinfo(None, port): the local wildcard, used to bind a server
    if not isinstance(host, str):
        return False
    name = host.strip().rstrip(".").lower()
    if name in LOOPBACK_NAMES or name.endswith(".localhost") or name == "":
        return True
    try:
        ip = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def _is_ip_literal(host: object) -> bool:
    try:
        ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return False
    return True


def _destination(event: str, args: tuple) -> str | None:
    """The refused destination as ``host:port``, or None when the event stays on this machine."""
    if event == "socket.getaddrinfo":
        host, port = args[0], args[1]
        # An IP literal resolves without a query; the connect that follows is checked on its own.
        if _is_loopback_host(host) or _is_ip_literal(host):
            return None
        host = host.decode() if isinstance(host, bytes) else host
        return f"{host}:{port}" if port not in (None, 0, "") else str(host)
    sock, address = args[0], args[1]
    family = getattr(sock, "family", None)
    if family == getattr(socket, "AF_UNIX", object()) or address is None:
        return None
    if isinstance(address, tuple) and address:
        if _is_loopback_host(address[0]):
            return None
        return f"{address[0]}:{address[1]}" if len(address) > 1 else str(address[0])
    if isinstance(address, (str, bytes)):  # a path: a Unix socket
        return None
    return repr(address)


def _violation(stage: str, refused: list[str]) -> OfflineViolation:
    more = f" (and {len(refused) - 1} more attempt(s))" if len(refused) > 1 else ""
    return OfflineViolation(
        f"run.offline is on: stage {stage} tried to open a network connection to {refused[0]}{more}",
        hint="the run must not leave this machine: put the model and data on local disk "
        "(model.base a local folder, tiny:<family> or pkg:<module>), or set run.offline: false",
    )


def _hook(event: str, args: tuple) -> None:
    if event not in WATCHED or not _state.active:
        return
    where = _destination(event, args)
    if where is None:
        return
    with _state.lock:
        _state.attempts.append(where)
    raise _violation(_state.active[-1], [where])


def _install() -> None:
    with _state.lock:
        if not _state.installed:
            sys.addaudithook(_hook)
            _state.installed = True


@contextmanager
def guard(stage: str) -> Iterator[None]:
    """Refuse every non-loopback connection while the block runs; fail it with the first one refused,
    also when the code that tried swallowed the error or wrapped it in its own."""
    _install()
    with _state.lock:
        first = len(_state.attempts)
        _state.active.append(stage)

    def leave() -> list[str]:
        with _state.lock:
            _state.active.pop()
            refused = _state.attempts[first:]
            del _state.attempts[first:]
        return refused

    try:
        yield
    except OfflineViolation:
        leave()
        raise
    except BaseException as exc:
        refused = leave()
        if refused:
            raise _violation(stage, refused) from exc
        raise
    refused = leave()
    if refused:
        raise _violation(stage, refused)


def active() -> bool:
    return bool(_state.active)
