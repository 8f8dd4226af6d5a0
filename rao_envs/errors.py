"""Typed errors for the three audiences of DESIGN §1.8.

* :class:`RaoEnvsError` and subclasses are **user mistakes** (bad env id, bad kwargs,
  acting on a finished node): they are raised, and every message says how to fix it.
* :class:`ToolError` is an **agent mistake** raised inside a task's tool: the engine turns it
  into a feedback observation and charges one step. It never escapes the engine.
* :class:`InfraError` is an **infrastructure failure** (sandbox died, backend down): the
  engine marks the node ``infra_error``, tells the parent, and the episode goes on.
"""

from __future__ import annotations


class RaoEnvsError(Exception):
    """Base class of every error raised to a *user* of rao_envs."""


class UnknownTaskError(RaoEnvsError, KeyError):
    """An env/task id that is not registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ConfigError(RaoEnvsError, ValueError):
    """Invalid keyword arguments or limits passed to ``make``/``parallel_env``."""


class ResetNeededError(RaoEnvsError, RuntimeError):
    """``step`` was called before ``reset`` or after the episode ended."""


class NodeNotActiveError(RaoEnvsError, RuntimeError):
    """An action was given to a node that has finished or is waiting on children."""


class ActionTypeError(RaoEnvsError, TypeError):
    """A view was given an action of the wrong type (e.g. a float for the discrete view): a bug in the caller."""


class PolicyOutputError(RaoEnvsError, TypeError):
    """A user-supplied policy returned something other than text or a ``Completion``: a bug in the policy."""


class TreeFormatError(RaoEnvsError, ValueError):
    """Text that is not a saved :class:`~rao_envs.types.EpisodeTree` (wrong file, truncated line)."""


class TreeFileError(RaoEnvsError, OSError):
    """A tree file could not be read or written (missing file, no permission)."""


class ToolError(Exception):
    """Raised by a task's tool when the *agent* made a mistake.

    The message becomes the node's next observation (one step is charged), e.g.
    ``raise ToolError("m3_i4 needs 2x m2_i3, you gave 1x")``.
    """


class InfraError(Exception):
    """Raised by a task's tool when the *infrastructure* failed (not the agent's fault).

    The node is marked ``infra_error`` and masked out of training; the episode continues.
    """
