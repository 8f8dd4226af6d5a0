"""What a task author writes: a :class:`Task` subclass with a generator, prompts, tools,
a verifier and an oracle. The engine (:mod:`rao_envs.tree`) does all tree bookkeeping.

A minimal task (see ``envs/_template.py`` for a full, copy-me version)::

    from rao_envs import Task, TaskInstance, tool

    class Echo(Task):
        name = "Echo"
        def generate(self, rng):
            word = str(rng.integers(100))
            return TaskInstance(goal=f"Say {word}", args={"word": word})
        def score(self, ctx):
            return float(ctx.node.result == ctx.node.args["word"])
        @tool
        def shout(self, ctx, text: str) -> str:
            \"\"\"Return the text in capitals.\"\"\"
            return text.upper()
"""

from __future__ import annotations

import copy
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from rao_envs.errors import ConfigError, ToolError
from rao_envs.seeding import node_rng
from rao_envs.types import Limits, Node, StateScope

TREE_VERBS = ("delegate", "finish", "wait", "cancel")


class TaskInstance(BaseModel):
    """One generated problem: the root's goal, its structured args, and task data.

    ``data`` holds anything the task needs later (e.g. a starting world state); it must be
    JSON-serialisable because it is stored in the :class:`~rao_envs.types.EpisodeTree`.
    """

    goal: str
    args: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)


class NodeContext:
    """What a tool or verifier sees of one node: the node, its world state, its RNG."""

    __slots__ = ("node", "state", "task", "instance", "_seed", "_rng")

    def __init__(self, node: Node, state: Any, task: Task, instance: TaskInstance, seed: int) -> None:
        self.node, self.state, self.task, self.instance = node, state, task, instance
        self._seed, self._rng = seed, None

    @property
    def rng(self) -> np.random.Generator:
        """RNG derived from ``(seed, node id)``: independent of scheduling order."""
        if self._rng is None:
            self._rng = node_rng(self._seed, self.node.id)
        return self._rng


class ToolSpec:
    """A task tool: the bound function, its argument model and its prompt line."""

    __slots__ = ("name", "fn", "model", "doc", "signature", "_validate")

    def __init__(self, name: str, fn: Callable[..., Any]) -> None:
        self.name, self.fn = name, fn
        params = list(inspect.signature(fn).parameters.values())[2:]  # skip self, ctx
        hints = typing.get_type_hints(fn)
        fields: dict[str, Any] = {}
        for p in params:
            ann = hints.get(p.name, Any)
            fields[p.name] = (ann, ... if p.default is inspect.Parameter.empty else p.default)
        self.model = create_model(f"{name}_args", __config__=ConfigDict(extra="forbid"), **fields)
        self._validate = self.model.__pydantic_validator__.validate_python if fields else None
        self.doc = inspect.cleandoc(fn.__doc__ or "").split("\n\n")[0].replace("\n", " ")
        parts = []
        for p in params:
            ann = hints.get(p.name, Any)
            # list[str] must read "list[str]", not "list": show parametrised types in full
            t = str(ann) if typing.get_origin(ann) else getattr(ann, "__name__", None) or str(ann)
            t = t.replace("typing.", "")
            parts.append(f"{p.name}: {t}" + ("" if p.default is inspect.Parameter.empty else f" = {p.default!r}"))
        self.signature = f"{name}({', '.join(parts)})"

    def placeholder_args(self) -> dict[str, Any]:
        """Example arguments from the signature: required ones only, each a :func:`placeholder` of its type."""
        return {n: placeholder(f.annotation, n) for n, f in self.model.model_fields.items() if f.is_required()}

    def call(self, task: Task, ctx: NodeContext, args: dict[str, Any]) -> Any:
        """Validate ``args`` and run the tool; bad arguments raise :class:`ToolError`."""
        if self._validate is None and not args:  # a tool without arguments, called without any
            return self.fn(task, ctx)
        try:
            parsed = self.model.model_validate(args) if self._validate is None else self._validate(args)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in e['loc']) or 'args'}: {e['msg']}" for e in exc.errors()[:4]
            )
            raise ToolError(f"bad arguments for {self.signature}: {problems}") from None
        return self.fn(task, ctx, **parsed.__dict__)  # a pydantic model's __dict__ holds exactly its fields


#: example arguments of the engine verbs whose values do not depend on the task
VERB_EXAMPLES: dict[str, dict[str, Any]] = {
    "wait": {"ids": "all"},
    "cancel": {"id": "0.1"},
    "finish": {"result": "your answer, in the format your task asks for"},
}


def placeholder(ann: Any, name: str = "value") -> Any:
    """A JSON example value of type annotation ``ann`` (for prompts): 1, "name", [..], {..}."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Literal and args:
        return args[0]
    if origin in (typing.Union, types.UnionType) and args:
        return placeholder(next((a for a in args if a is not type(None)), str), name)
    if ann is bool:
        return True
    if ann is int:
        return 1
    if ann is float:
        return 1.0
    if ann in (list, tuple) or origin in (list, tuple):
        return [placeholder(args[0] if args else str, name.rstrip("s") or name)]
    if ann is dict or origin is dict:
        return {placeholder(args[0], "key") if args else "key": placeholder(args[1], "n") if len(args) > 1 else 1}
    return name  # str and anything else: a string naming what goes there


_TYPE_NAMES = {"str": str, "int": int, "float": float, "bool": bool, "dict": dict, "list": list, "tuple": tuple,
               "Any": Any, "Literal": typing.Literal}


def delegate_params(doc: str) -> list[tuple[str, Any]]:
    """The task arguments of ``delegate`` from a ``delegate_args_doc`` such as ``", targets: dict[str, int]"``.

    Returns ``[(name, type)]``; a type the parser cannot read is ``str``.
    """
    out = []
    for part in _split_top(doc.strip().lstrip(",")):
        name, sep, ann = part.partition(":")
        if not sep or not name.strip().isidentifier():
            continue
        try:
            hint = eval(ann.split("=")[0].strip(), {"__builtins__": {}}, _TYPE_NAMES)  # noqa: S307 (whitelisted names only)
        except Exception:
            hint = str
        out.append((name.strip(), hint))
    return out


def _split_top(text: str) -> list[str]:
    """``"a: int, b: dict[str, int]"`` → ``["a: int", " b: dict[str, int]"]`` (commas inside brackets kept)."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p for p in (*parts, cur) if p.strip()]


def tool(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a ``Task`` method ``(self, ctx, **args) -> str`` as a tool the agent can call.

    Argument types come from the annotations (validated with pydantic); the first paragraph
    of the docstring is shown to the model.
    """
    fn.__rao_tool__ = True  # type: ignore[attr-defined]
    return fn


class Task:
    """Base class of every task. Subclasses set the class attributes and override the hooks.

    Required: :meth:`generate` and :meth:`score`. Usually also: :attr:`system_prompt`, tools
    (methods decorated with :func:`tool`), :meth:`oracle`. Optional: :meth:`child_args`
    (validate what a parent delegates), :meth:`initial_state`/:meth:`child_state`/:meth:`snapshot`
    (world state), :meth:`node_prompt`, :attr:`state_scope`. Every attribute a task may set is
    declared here with its default; the engine and the tools read nothing else.
    """

    name: ClassVar[str] = ""
    """The task's name; its id is ``f"{name}-v{version}"``."""
    version: ClassVar[int] = 0
    """Bump when generated instances or scoring change (a new id, as in Gymnasium)."""
    state_scope: ClassVar[StateScope] = StateScope.ISOLATED
    """How a child's world relates to its parent's (DESIGN §1.5)."""
    difficulties: ClassVar[tuple[str, ...]] = ("default",)
    """The accepted ``difficulty`` values, easiest first."""
    default_difficulty: ClassVar[str | None] = None
    """The difficulty when none is given (default: the first of :attr:`difficulties`)."""
    default_limits: ClassVar[dict[str, Any]] = {}
    """Overrides of :class:`~rao_envs.types.Limits` defaults for this task."""
    recommended_max_depth: ClassVar[dict[str, int]] = {}
    """Per difficulty, the ``max_depth`` at which the oracle solves every instance (when it
    differs from ``default_limits``); read it with :meth:`max_depth_for`."""
    system_prompt: ClassVar[str] = "You are an agent solving a task step by step."
    """The task's part of every node's system prompt (the engine appends the action space)."""
    delegate_args_doc: ClassVar[str] = ""
    """Task arguments of ``delegate`` as shown in the prompt's signature, e.g. ``", numbers: list[int]"``."""
    examples: ClassVar[dict[str, dict[str, Any]]] = {}
    """Example arguments per action, for the one example call of each in the system prompt:
    a tool's name, ``"delegate"`` (``goal`` and the task arguments) or ``"finish"`` (``result``,
    in the format a parent needs). Actions left out get placeholders from their signatures."""
    instance_model: ClassVar[type[BaseModel] | None] = None
    """Optional typed model of ``TaskInstance.args`` (a frozen pydantic model): when set,
    generated instances are validated against it, so a task's data shape is documented."""
    show_status: bool = True
    """Whether the engine adds its status line (depth, steps left) to every observation and its
    delegation line to the first message; a task whose prompts state the budget itself sets False."""
    tools: ClassVar[dict[str, ToolSpec]] = {}
    """The task's tools, collected from :func:`tool`-decorated methods (set automatically)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        specs: dict[str, ToolSpec] = {}
        for klass in reversed(cls.__mro__):
            for attr, fn in vars(klass).items():
                if callable(fn) and getattr(fn, "__rao_tool__", False):
                    if attr in TREE_VERBS:
                        raise TypeError(f"{cls.__name__}: tool name {attr!r} is reserved for the engine")
                    specs[attr] = ToolSpec(attr, fn)
        cls.tools = specs

    def __init__(self, difficulty: str | None = None, split: str = "train") -> None:
        difficulty = difficulty or self.default_difficulty or self.difficulties[0]
        if difficulty not in self.difficulties:
            raise ConfigError(
                f"{self.name}: unknown difficulty {difficulty!r}; choose one of {list(self.difficulties)}"
            )
        if split not in ("train", "val"):
            raise ConfigError(f"{self.name}: split must be 'train' or 'val', got {split!r}")
        self.difficulty, self.split = difficulty, split

    # -- hooks a task author writes ------------------------------------------------------
    def generate(self, rng: np.random.Generator) -> TaskInstance:
        """Draw one problem instance from ``rng`` (seeded by ``reset(seed=...)``)."""
        raise NotImplementedError

    def score(self, ctx: NodeContext) -> float:
        """The verifier s̃ ∈ [0, 1] for a node that called ``finish`` (its own goal/args)."""
        raise NotImplementedError

    def node_prompt(self, ctx: NodeContext) -> str:
        """The first user message of a node: its goal (and context from the parent)."""
        text = f"# Task\n{ctx.node.goal}"
        if ctx.node.context:
            text += f"\n\n# Context from your parent agent\n{ctx.node.context}"
        return text

    def child_args(self, parent: NodeContext, goal: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Check what a parent delegates; return the child's ``(goal, args)``.

        Raise :class:`~rao_envs.errors.ToolError` with a helpful message for bad args.
        """
        if args:
            raise ToolError(f"{self.name} takes no task arguments for delegate; got {sorted(args)}")
        return goal, args

    def initial_state(self, instance: TaskInstance) -> Any:
        """The root's world state (default: a deep copy of ``instance.data``)."""
        return copy.deepcopy(instance.data)

    def child_state(self, instance: TaskInstance, args: dict[str, Any]) -> Any:
        """A fresh world for an ``isolated`` child (default: same as the root's)."""
        return self.initial_state(instance)

    def snapshot(self, state: Any) -> Any:
        """JSON-able copy of the state taken at spawn, for the verifier (default: none)."""
        return None

    def oracle(self, **kwargs: Any) -> Callable[[Any, dict[str, Any]], Any]:
        """A scripted policy ``(observation, info) -> action`` that reaches the maximum score."""
        raise NotImplementedError(f"{self.name} has no oracle")

    def num_instances(self) -> int | None:
        """The length of a fixed, enumerable instance list (None: instances come from :meth:`generate`)."""
        return None

    def instance(self, index: int) -> TaskInstance:
        """Instance ``index`` (0 <= index < :meth:`num_instances`) of a fixed list."""
        raise NotImplementedError(f"{self.name} has no fixed instance list")

    def tree_verbs(self, limits: Limits) -> tuple[str, ...]:
        """The engine verbs offered to the agent (default: all; e.g. no ``delegate`` in a single-agent control)."""
        return TREE_VERBS

    def describe_verb(self, verb: str, default: str) -> str:
        """The action-space line of engine verb ``verb`` (default: the engine's text ``default``)."""
        return default

    # -- helpers -------------------------------------------------------------------------
    @classmethod
    def limits(cls, **overrides: Any) -> Limits:
        """The task's default :class:`Limits` with ``overrides`` applied."""
        return Limits(**{**cls.default_limits, **overrides})

    @classmethod
    def max_depth_for(cls, difficulty: str) -> int:
        """The ``max_depth`` to use for ``difficulty``: :attr:`recommended_max_depth`, else the default limit."""
        return cls.recommended_max_depth.get(difficulty, cls.limits().max_depth)

    def make_instance(self, rng: np.random.Generator) -> TaskInstance:
        """:meth:`generate`, with ``args`` checked against :attr:`instance_model` when the task has one."""
        instance = self.generate(rng)
        if self.instance_model is not None:
            try:
                self.instance_model.model_validate(instance.args)
            except ValidationError as exc:
                raise TypeError(f"{self.name}.generate returned args that do not match {self.instance_model.__name__}: {exc}") from None
        return instance

    def example_args(self, action: str) -> dict[str, Any]:
        """The arguments of the prompt's example call of ``action`` (a tool or an engine verb).

        The task's :attr:`examples` entry when it has one; otherwise placeholders built from the
        tool's signature (or, for ``delegate``, from :attr:`delegate_args_doc`).
        """
        if action in self.examples:
            return dict(self.examples[action])
        if action in self.tools:
            return self.tools[action].placeholder_args()
        if action == "delegate":
            args: dict[str, Any] = {"goal": "a sub-task, in plain words"}
            for name, hint in delegate_params(self.delegate_args_doc):
                args[name] = placeholder(hint, name)
            return args
        return dict(VERB_EXAMPLES.get(action, {}))

    def describe_tools(self) -> str:
        """The task-tool lines of the action-space text."""
        return "\n".join(f"- {s.signature}: {s.doc}" for s in self.tools.values())
