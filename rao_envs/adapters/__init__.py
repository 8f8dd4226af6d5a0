"""Trainer adapters (optional extras, never imported by the core).

* :mod:`rao_envs.adapters.sft` — oracle demonstrations as chat SFT rows and the valid-action
  rate (no trainer library needed; ``rao-envs demos`` writes them);
* :mod:`rao_envs.adapters.trl` — TRL: a tree trainer with per-node advantages, a root-only
  ``rollout_func``, an ``environment_factory`` class and an async rollout worker
  (``pip install "rao_envs[trl]"``).
"""
