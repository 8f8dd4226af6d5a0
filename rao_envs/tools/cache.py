"""An on-disk cache for artifacts a machine builds once (search indexes, generated worlds).

:func:`cache_dir` is the root (``$RAO_ENVS_CACHE``, else ``$XDG_CACHE_HOME/rao_envs``, else
``~/.cache/rao_envs``). :func:`build_once` builds a directory in a private temporary sibling
and renames it into place, so parallel workers (processes, Ray actors) never see half an
artifact: the final path exists only once it is complete, and when two workers race, the
first rename wins and the other's copy is discarded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

ENV_VAR = "RAO_ENVS_CACHE"


def cache_dir(*parts: str) -> Path:
    """The cache directory (created), or a subdirectory of it named by ``parts``."""
    root = os.environ.get(ENV_VAR)
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "rao_envs")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_once(path: str | os.PathLike, build: Callable[[Path], None]) -> Path:
    """Return ``path``, first calling ``build(tmp)`` to fill a temporary directory renamed to it.

    Does nothing when ``path`` already exists (a complete artifact, by construction). ``build``
    receives an empty directory that exists; if it raises, the temporary directory is removed
    and the error propagates.
    """
    final = Path(path)
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the artifact is for every user of the cache
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():  # not a lost race: a real error
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
