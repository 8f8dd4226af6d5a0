"""Task registry: ids like ``TextCraft-v0`` → task classes, mirrored into Gymnasium.

``register_task`` also registers ``rao_envs/<id>`` with :func:`gymnasium.register`, so
``gymnasium.make("rao_envs/TextCraft-v0", difficulty="hard")`` works after ``import
rao_envs``. Third-party packages add tasks through the ``rao_envs.tasks`` entry-point group:
each entry point names a module (importing it registers its tasks) or a ``Task`` subclass.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import gymnasium

from rao_envs.errors import ConfigError, UnknownTaskError
from rao_envs.task import Task
from rao_envs.types import Limits

ENTRY_POINT_GROUP = "rao_envs.tasks"
GYM_NAMESPACE = "rao_envs"
ENGINE_KWARGS = ("lam",)


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: its id, where its class lives, and default keyword arguments."""

    id: str
    entry_point: str | type[Task]
    kwargs: dict[str, Any] = field(default_factory=dict)
    source: str = "rao_envs"

    def load(self) -> type[Task]:
        """Import and return the task class."""
        if isinstance(self.entry_point, type):
            return self.entry_point
        module, _, attr = self.entry_point.partition(":")
        return getattr(importlib.import_module(module), attr)


_REGISTRY: dict[str, TaskSpec] = {}
_plugins_loaded = False


def register_task(
    id: str, entry_point: str | type[Task], *, source: str = "rao_envs", **kwargs: Any
) -> TaskSpec:
    """Register a task under ``id`` (``Name-vN``) and as ``rao_envs/<id>`` in Gymnasium.

    Re-registering the same id replaces the earlier entry (handy in notebooks).
    """
    if "-v" not in id or not id.rsplit("-v", 1)[1].isdigit():
        raise ConfigError(f"task id {id!r} must look like 'Name-v0' (a name, '-v', a version number)")
    spec = TaskSpec(id=id, entry_point=entry_point, kwargs=dict(kwargs), source=source)
    _REGISTRY[id] = spec
    gym_id = f"{GYM_NAMESPACE}/{id}"
    gymnasium.registry.pop(gym_id, None)
    gymnasium.register(id=gym_id, entry_point="rao_envs.views.gym:RaoEnv", kwargs={"task_id": id})
    return spec


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not break `import rao_envs`
            import warnings

            warnings.warn(f"rao_envs: could not load task plugin {ep.name!r} ({ep.value}): {exc}", stacklevel=2)
            continue
        if isinstance(obj, type) and issubclass(obj, Task) and f"{obj.name}-v{obj.version}" not in _REGISTRY:
            dist = getattr(ep, "dist", None)
            register_task(f"{obj.name}-v{obj.version}", obj, source=getattr(dist, "name", None) or ep.value)


def task_ids() -> list[str]:
    """All registered task ids, built-in and from plugins, sorted."""
    _load_plugins()
    return sorted(_REGISTRY)


def task_spec(id: str) -> TaskSpec:
    """The :class:`TaskSpec` of ``id`` (``TextCraft-v0`` or ``rao_envs/TextCraft-v0``)."""
    _load_plugins()
    key = id.split("/", 1)[1] if id.startswith(GYM_NAMESPACE + "/") else id
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownTaskError(
            f"no task {id!r} is registered.{hint} Known tasks: {', '.join(sorted(_REGISTRY))} "
            "(`rao-envs list` shows them; register your own with rao_envs.register_task)."
        )
    return _REGISTRY[key]


def split_kwargs(id: str, kwargs: dict[str, Any]) -> tuple[type[Task], dict[str, Any], Limits, dict[str, Any]]:
    """Split ``make`` kwargs into (task class, task kwargs, limits, engine kwargs).

    Unknown names raise :class:`~rao_envs.errors.ConfigError` listing the valid ones.
    """
    spec = task_spec(id)
    cls = spec.load()
    merged = {**spec.kwargs, **kwargs}
    task_params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    limit_names = list(Limits.model_fields)
    task_kw, limit_kw, engine_kw = {}, {}, {}
    for key, value in merged.items():
        if key in limit_names:
            limit_kw[key] = value
        elif key in ENGINE_KWARGS:
            engine_kw[key] = value
        elif key in task_params:
            task_kw[key] = value
        else:
            raise ConfigError(
                f"unknown argument {key!r} for {spec.id}. Task arguments: {task_params}; "
                f"limits: {limit_names}; engine: {list(ENGINE_KWARGS)}."
            )
    try:
        limits = cls.limits(**limit_kw)
    except Exception as exc:
        raise ConfigError(f"invalid limits for {spec.id}: {exc}") from None
    return cls, task_kw, limits, engine_kw


def make_engine(id: str, **kwargs: Any):
    """Build a :class:`~rao_envs.tree.TreeEngine` for task ``id`` (kwargs as in ``make``)."""
    from rao_envs.tree import TreeEngine

    cls, task_kw, limits, engine_kw = split_kwargs(id, kwargs)
    task = cls(**task_kw)
    spec = task_spec(id)
    return TreeEngine(task, limits, env_id=spec.id, task_kwargs=task_kw, **engine_kw)
