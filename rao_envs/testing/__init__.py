"""The conformance suite, shipped with the library so task authors run it on their own task.

From the shell: ``rao-envs check MyTask-v0``. From pytest::

    from rao_envs.testing import run_conformance
    def test_my_task():
        run_conformance("MyTask-v0").raise_on_failure()

Every ``check_*`` function raises :class:`ConformanceError` with a readable message.
"""

from rao_envs.testing.conformance import (
    CHECKS,
    ConformanceError,
    ConformanceReport,
    check_determinism,
    check_fuzz,
    check_gym_env,
    check_oracle,
    check_parallel_env,
    check_state_scope,
    check_tree_invariants,
    fuzz_actions,
    run_conformance,
)

__all__ = [
    "CHECKS", "ConformanceError", "ConformanceReport", "check_determinism", "check_fuzz", "check_gym_env",
    "check_oracle", "check_parallel_env", "check_state_scope", "check_tree_invariants", "fuzz_actions",
    "run_conformance",
]
