"""Sandboxed code execution for rao_envs tasks (DESIGN §5).

>>> from rao_envs.sandboxes import make_sandbox
>>> with make_sandbox("local", timeout=5, memory_mb=512) as sb:   # doctest: +SKIP
...     sb.run("x = 21")
...     print(sb.run("x * 2").stdout)                               # REPL state persists
42

Backends: ``"local"`` (bubblewrap + warm fork-server, default on Linux), ``"docker"`` (Docker
SDK, one long-lived container per sandbox; also works against Podman's socket) and
``"process"`` (plain subprocess, NOT isolated, warns). :class:`SandboxPool` hands warm
sandboxes to concurrent episodes. Importing this package is cheap: no backend is imported
until it is used, and ``docker`` is only imported by the docker backend.
"""

from __future__ import annotations

import sys
from typing import Optional

from .base import (
    AGENT_ERROR_KINDS,
    ERROR_KINDS,
    ExecResult,
    ResourceLimits,
    Sandbox,
    SandboxConfigError,
    SandboxError,
    SandboxInfraError,
    SandboxRefused,
    SandboxUnavailable,
    Session,
)
from .pool import SandboxPool

__all__ = [
    "AGENT_ERROR_KINDS",
    "BACKENDS",
    "ERROR_KINDS",
    "ExecResult",
    "ResourceLimits",
    "Sandbox",
    "SandboxConfigError",
    "SandboxError",
    "SandboxInfraError",
    "SandboxPool",
    "SandboxRefused",
    "SandboxUnavailable",
    "Session",
    "available_backends",
    "default_backend",
    "make_sandbox",
]

BACKENDS = ("local", "docker", "process")


def default_backend() -> str:
    """``"local"`` on Linux, ``"process"`` elsewhere (with its loud warning)."""
    return "local" if sys.platform.startswith("linux") else "process"


def _backend_class(name: str):
    if name == "local":
        from .local import LocalSandbox

        return LocalSandbox
    if name == "docker":
        from .docker_backend import DockerSandbox

        return DockerSandbox
    if name == "process":
        from .process import ProcessSandbox

        return ProcessSandbox
    raise SandboxConfigError(f"unknown sandbox backend {name!r}; choose one of {list(BACKENDS)}")


def make_sandbox(backend: Optional[str] = None, **kwargs) -> Sandbox:
    """Create an (unstarted) sandbox. ``kwargs`` are :class:`ResourceLimits` fields (``timeout``,
    ``memory_mb``, ``processes``, ...) plus backend options (``python``, ``image``, ...).

    The sandbox starts on first use or with ``with``/``start()``. Raises
    :class:`SandboxUnavailable` with the fix when the backend cannot work on this machine.
    """
    name = backend or default_backend()
    cls = _backend_class(name)
    limits = kwargs.pop("limits", None)
    if limits is None:
        limits = ResourceLimits.from_kwargs(kwargs)
    elif not isinstance(limits, ResourceLimits):
        raise SandboxConfigError("limits= must be a rao_envs.sandboxes.ResourceLimits")
    check = getattr(cls, "check_available", None)
    if check is not None and name == "local":
        check()
    return cls(limits, **kwargs)


def available_backends() -> dict:
    """``{name: None or reason it is unavailable}`` for every backend (cheap checks only)."""
    out: dict = {}
    for name in BACKENDS:
        try:
            cls = _backend_class(name)
            check = getattr(cls, "check_available", None)
            if check is not None:
                check()
            out[name] = None
        except SandboxUnavailable as e:
            out[name] = str(e)
        except Exception as e:  # noqa: BLE001
            out[name] = f"{type(e).__name__}: {e}"
    return out
