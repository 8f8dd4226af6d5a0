"""Task registry: ids like ``Name-v0`` → :class:`TaskSpec`, mirrored into Gymnasium.

One registry of specs, as Gymnasium keeps one of ``EnvSpec``: ``register_task`` records a
:class:`TaskSpec` and registers every view it lists with :func:`gymnasium.register` —
``rao_envs/<Name>-v<N>`` (the text view) and, for a task that names a discrete adapter,
``rao_envs/<Name>Discrete-v<N>`` — so ``gymnasium.make`` works right after ``import rao_envs``.
Ids are parsed by one regex (:data:`TASK_ID_RE`); re-registering an id replaces it with a
warning. Third-party packages add tasks through the ``rao_envs.tasks`` entry-point group:
each entry point names a module (importing it registers its tasks) or a ``Task`` subclass.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import gymnasium

from rao_envs.errors import ConfigError, UnknownTaskError
from rao_envs.task import Task
from rao_envs.types import Limits

ENTRY_POINT_GROUP = "rao_envs.tasks"
GYM_NAMESPACE = "rao_envs"
ENGINE_KWARGS = ("lam", "protocol", "sandbox", "prompt_style")
#: ``[rao_envs/]Name-vN``: the one parser of task ids (the namespace is optional)
TASK_ID_RE = re.compile(r"^(?:(?P<namespace>[\w.-]+)/)?(?P<name>[A-Za-z][\w.]*)-v(?P<version>\d+)$")
#: view name -> (Gymnasium id suffix after the task name, entry point of the view class)
VIEW_ENTRY_POINTS = {
    "text": ("", "rao_envs.views.gym:RaoEnv"),
    "discrete": ("Discrete", "rao_envs.views.discrete:DiscreteRaoEnv"),
}


def parse_task_id(id: str) -> tuple[str, int]:
    """``"Name-v0"`` or ``"rao_envs/Name-v0"`` → ``("Name", 0)``; raises ConfigError otherwise."""
    m = TASK_ID_RE.match(id) if isinstance(id, str) else None
    if m is None or (m.group("namespace") not in (None, GYM_NAMESPACE)):
        raise ConfigError(f"task id {id!r} must look like 'Name-v0' (a name, '-v', a version number), optionally 'rao_envs/Name-v0'")
    return m.group("name"), int(m.group("version"))


def _load_object(ref: str | type) -> Any:
    """Import ``"module:attr"`` (or return a class given directly)."""
    if isinstance(ref, type):
        return ref
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: its id, where its class lives, default kwargs, and the views it registers.

    ``views`` maps a view name to its Gymnasium id: always ``"text"`` (``rao_envs/<id>``,
    also the PettingZoo view) and ``"discrete"`` when ``discrete`` names the task's
    :class:`~rao_envs.views.discrete.DiscreteAdapter` (``"module:Class"``).
    """

    id: str
    entry_point: str | type[Task]
    kwargs: dict[str, Any] = field(default_factory=dict)
    source: str = "rao_envs"
    discrete: str | type | None = None
    views: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The task name (``Name`` of ``Name-v0``)."""
        return parse_task_id(self.id)[0]

    @property
    def version(self) -> int:
        """The version number (``0`` of ``Name-v0``)."""
        return parse_task_id(self.id)[1]

    def load(self) -> type[Task]:
        """Import and return the task class."""
        return _load_object(self.entry_point)

    def load_discrete(self) -> type:
        """Import and return the task's discrete adapter class; ConfigError when it has none."""
        if self.discrete is None:
            with_adapter = [s.id for s in _REGISTRY.values() if s.discrete is not None]
            raise ConfigError(
                f"task {self.id} has no discrete adapter; tasks with one: {with_adapter}. Register one with "
                "register_task(..., discrete='module:AdapterClass') (a rao_envs.views.discrete.DiscreteAdapter)."
            )
        return _load_object(self.discrete)


_REGISTRY: dict[str, TaskSpec] = {}
_plugins_loaded = False


def register_task(
    id: str,
    entry_point: str | type[Task],
    *,
    source: str = "rao_envs",
    discrete: str | type | None = None,
    **kwargs: Any,
) -> TaskSpec:
    """Register a task under ``id`` (``Name-vN``) and its views in Gymnasium (module docstring).

    ``discrete`` names the task's discrete adapter (``"module:Class"``), which adds the
    ``rao_envs/<Name>Discrete-vN`` view. Re-registering an id replaces the earlier entry and
    warns (handy in notebooks, a mistake elsewhere).
    """
    name, version = parse_task_id(id)
    id = f"{name}-v{version}"
    for what, ref in (("entry_point", entry_point), ("discrete", discrete)):
        ok = (isinstance(ref, str) and ":" in ref) or (isinstance(ref, type) and (what == "discrete" or issubclass(ref, Task)))
        if not ok and not (what == "discrete" and ref is None):
            raise ConfigError(
                f"register_task({id!r}): {what} must be 'module:Class' or a class"
                f"{' (a Task subclass)' if what == 'entry_point' else ''}, got {type(ref).__name__}"
            )
    if id in _REGISTRY:
        warnings.warn(f"rao_envs: overriding the registered task {id!r}", stacklevel=2)
    views = {"text": f"{GYM_NAMESPACE}/{id}"}
    if discrete is not None:
        views["discrete"] = f"{GYM_NAMESPACE}/{name}Discrete-v{version}"
    old = _REGISTRY.get(id)
    for gym_id in (old.views.values() if old is not None else ()):
        gymnasium.registry.pop(gym_id, None)
    spec = TaskSpec(id=id, entry_point=entry_point, kwargs=dict(kwargs), source=source, discrete=discrete, views=views)
    _REGISTRY[id] = spec
    for view, gym_id in views.items():
        gymnasium.registry.pop(gym_id, None)
        # order_enforce=False: our views raise rao_envs' own ResetNeededError, which says the fix.
        # The discrete view skips the passive checker (our conformance suite runs check_env itself) so that
        # gym.make returns the env itself: `ActionMasker(env, lambda e: e.action_masks())` then works, since
        # Gymnasium 1.x wrappers no longer forward attributes.
        gymnasium.register(id=gym_id, entry_point=VIEW_ENTRY_POINTS[view][1], kwargs={"task_id": id}, order_enforce=False,
                           disable_env_checker=view == "discrete")
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
    """The :class:`TaskSpec` of ``id`` (``Name-v0`` or ``rao_envs/Name-v0``)."""
    _load_plugins()
    m = TASK_ID_RE.match(id) if isinstance(id, str) else None
    key = f"{m.group('name')}-v{m.group('version')}" if m and m.group("namespace") in (None, GYM_NAMESPACE) else str(id)
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
    lam = engine_kw.get("lam")
    if lam is not None and (isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam)):
        raise ConfigError(f"lam (λ of the local reward) must be a finite number such as 0.4, got {lam!r}")
    if "prompt_style" in engine_kw:
        from rao_envs.tree import check_prompt_style

        check_prompt_style(engine_kw["prompt_style"])
    if "protocol" in engine_kw:
        from rao_envs.protocols import get_protocol

        get_protocol(engine_kw["protocol"])  # ConfigError naming the known protocols
    return cls, task_kw, limits, engine_kw


def engine_factory(id: str, **kwargs: Any) -> Callable[[], Any]:
    """A zero-argument callable that builds a fresh :class:`~rao_envs.tree.TreeEngine` for ``id``.

    The id and kwargs are resolved and checked once (ConfigError for bad ones); each call then
    only builds the task and the engine. Drivers that make many engines use this.
    """
    from rao_envs.tree import TreeEngine

    cls, task_kw, limits, engine_kw = split_kwargs(id, kwargs)
    spec_id = task_spec(id).id

    def build() -> TreeEngine:
        return TreeEngine(cls(**task_kw), limits, env_id=spec_id, task_kwargs=task_kw, **engine_kw)

    return build


def make_engine(id: str, **kwargs: Any):
    """Build a :class:`~rao_envs.tree.TreeEngine` for task ``id`` (kwargs as in ``make``)."""
    return engine_factory(id, **kwargs)()
