"""Seeds and RNGs, in one place: fresh seeds for ``reset(seed=None)`` and per-node streams.

Every view and the engine draw their "no seed given" fallback here, and every node's RNG is
derived from ``(episode seed, node id)``, so the same seed gives the same tree whatever the
scheduling order (DESIGN §1.7).
"""

from __future__ import annotations

import numpy as np

from rao_envs.errors import ConfigError

MAX_SEED = 2**31 - 1


def check_seed(seed: object) -> int:
    """``seed`` as an int if it is an integer (Python or numpy, not a bool and not negative); else ConfigError."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)) and int(seed) >= 0:
        return int(seed)
    raise ConfigError(f"a seed must be a non-negative integer (or None for a fresh one), got {type(seed).__name__} {seed!r:.40}")


def fresh_seed(rng: np.random.Generator | None = None) -> int:
    """A new episode seed: drawn from ``rng`` (e.g. a Gymnasium env's ``np_random``) or OS entropy."""
    if rng is not None:
        return int(rng.integers(MAX_SEED))
    return int(np.random.SeedSequence().generate_state(1)[0] >> 1)


def node_rng(seed: int, node_id: str) -> np.random.Generator:
    """The RNG of node ``node_id`` (``"0.1.2"``) in the episode seeded with ``seed``."""
    key = tuple(int(p) for p in node_id.split("."))
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))
