"""Tools that tasks share: full-text search (:mod:`rao_envs.tools.search`) and an on-disk cache
for artifacts built once per machine (:mod:`rao_envs.tools.cache`).

Nothing here imports a task; tasks import these.
"""

from rao_envs.tools.cache import build_once, cache_dir
from rao_envs.tools.search import (
    BACKENDS,
    Doc,
    Hit,
    SearchIndex,
    available_backends,
    cached_index,
    create_index,
    default_backend,
    open_index,
    query_terms,
)

__all__ = [
    "BACKENDS", "Doc", "Hit", "SearchIndex", "available_backends", "build_once", "cache_dir",
    "cached_index", "create_index", "default_backend", "open_index", "query_terms",
]
