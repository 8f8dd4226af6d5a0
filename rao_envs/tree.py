"""The episode-tree engine (DESIGN §1): nodes, delegation, budgets, turn-taking, rewards.

:class:`TreeEngine` owns all bookkeeping, turn-taking included (in the spirit of PettingZoo's
AEC env): it keeps the :attr:`~TreeEngine.selection` (the node whose turn it is, in a fair
round-robin order), :meth:`~TreeEngine.act` steps it and returns a complete
:class:`StepOutcome` (nodes that ended or spawned, their rewards, ``done``, the next node).
Drivers that schedule nodes themselves (the rollout driver, the PettingZoo view) call
:meth:`~TreeEngine.step` with an explicit node. :meth:`~TreeEngine.observe` and
:meth:`~TreeEngine.node_info` are pure queries; :meth:`~TreeEngine.commit` writes a node's
pending messages (tool output, child results) into its transcript, which :meth:`step` also
does before the node's turn. The text protocol is a pluggable part (:mod:`rao_envs.protocols`).

A step costs O(1) work beyond the task's own tool: observations are the *new* message only,
never a re-render of the history, so per-step cost stays flat as episodes and trees grow.
"""

from __future__ import annotations

import copy
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rao_envs.credit import local_reward
from rao_envs.payload import clean_text, normalize
from rao_envs.errors import ConfigError, InfraError, NodeNotActiveError, ResetNeededError, ToolError
from rao_envs.policies.base import ChildResult, Completion, NodeInfo
from rao_envs.protocols import ActionProtocol, Call, ParseError, get_protocol
from rao_envs.seeding import check_seed, fresh_seed
from rao_envs.task import TREE_VERBS, NodeContext, Task, TaskInstance, delegate_params
from rao_envs.types import Action, EpisodeTree, Limits, Message, Node, NodeStatus, StateScope

RUNNING, WAITING = NodeStatus.RUNNING, NodeStatus.WAITING
CANCELLED = NodeStatus.CANCELLED
TRUNC_MARK = "\n…[truncated {n} characters]"
#: ``prompt_style`` values: ``full`` (tools documented, one example call each) or ``compact`` (a few lines, for small models on CPU)
PROMPT_STYLES = ("full", "compact")
STATUS_IDS = 16  # running sub-agents named in a status line (the rest are counted)
MIN_PART = 80  # the least of each part a clipped observation shows (its tag and the start of its text)
DEFER_NOTE = "[{k} more message(s) did not fit here; they arrive with your next observation]"


def check_prompt_style(style: Any) -> str:
    """``style`` if it is one of :data:`PROMPT_STYLES`; else a :class:`ConfigError` that lists them."""
    if style not in PROMPT_STYLES:
        raise ConfigError(f"prompt_style must be one of {list(PROMPT_STYLES)}, got {style!r}")
    return style


@dataclass(slots=True)
class StepOutcome:
    """Everything one turn changed: the node that acted, nodes that ended or spawned, and what comes next.

    ``rewards`` maps each ended node to its local reward R (None for ``infra_error`` nodes);
    ``done`` is True once the root has ended; ``next`` is the node whose turn it is now in the
    engine's fair order (:attr:`TreeEngine.selection`; None when done).
    """

    node: str
    ended: list[str] = field(default_factory=list)
    spawned: list[str] = field(default_factory=list)
    rewards: dict[str, float | None] = field(default_factory=dict)
    done: bool = False
    next: str | None = None


def _cut(text: str, cap: int) -> str:
    """``text`` cut to at most ``cap`` characters, ending with a visible truncation marker."""
    keep = cap - len(TRUNC_MARK.format(n=len(text)))
    if keep <= 0:
        return text[: max(cap, 0)]
    return text[:keep] + TRUNC_MARK.format(n=len(text) - keep)


def _fair_caps(lengths: list[int], room: int) -> list[int]:
    """Water-filling: parts shorter than an equal share keep their length, the rest share what is left."""
    caps = [0] * len(lengths)
    left, k = max(room, 0), len(lengths)
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        caps[i] = min(lengths[i], left // k)
        left -= caps[i]
        k -= 1
    return caps


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


class TreeEngine:
    """Runs one recursive episode of ``task`` under ``limits``.

    Call :meth:`reset`, then until :attr:`done`: read :meth:`observe` (and :meth:`node_info`)
    of the :attr:`selection` and :meth:`act` on it, which returns a :class:`StepOutcome`::

        import rao_envs

        engine = rao_envs.make_engine("Toy-v0")
        policy = lambda text, info: '<tool>{"name": "finish", "args": {"result": 0}}</tool>'  # any (text, NodeInfo) -> action
        engine.reset(seed=0)
        while not engine.done:
            out = engine.act(policy(engine.observe(), engine.node_info()))

    A driver that picks nodes itself calls :meth:`step` on any node from :meth:`runnable`.
    The result is :attr:`tree`, an :class:`~rao_envs.types.EpisodeTree`. ``protocol`` names
    the text protocol (``"tool"``) or is an :class:`~rao_envs.protocols.ActionProtocol`.
    ``prompt_style="compact"`` shortens every node's system prompt to the task's own prompt,
    the protocol's format and one line of action names (no tool docs, no example calls: about
    150 instead of 486 SmolLM2 tokens on Toy-v0), for small models taught the format by demonstrations.
    """

    def __init__(
        self,
        task: Task,
        limits: Limits | None = None,
        *,
        env_id: str = "",
        lam: float = 0.0,
        task_kwargs: dict[str, Any] | None = None,
        protocol: str | ActionProtocol = "tool",
        sandbox: Any = None,
        prompt_style: str = "full",
    ) -> None:
        self.task = task
        self.prompt_style = check_prompt_style(prompt_style)
        self.limits = limits or task.limits()
        self.env_id = env_id or f"{task.name}-v{task.version}"
        self.lam = float(lam)
        self.task_kwargs = dict(task_kwargs or {})
        self.protocol = get_protocol(protocol, self.limits.max_action_chars)
        self._verbs = tuple(task.tree_verbs(self.limits))  # the engine verbs this task offers
        self._hidden_verbs = frozenset(TREE_VERBS) - set(self._verbs)
        # code mode (protocol="code"): cells run in sandboxed REPLs (rao_envs.code_runner)
        self._runner = self.protocol.runner(self, sandbox) if getattr(self.protocol, "runs_cells", False) else None
        self._max_stored = self.limits.max_action_chars + 1024  # longest assistant text kept in a transcript
        self.system_prompt = self._system_prompt()
        self.tree: EpisodeTree | None = None

    # ------------------------------------------------------------------ episode lifecycle
    def reset(self, seed: int | None = None, task_index: int | None = None) -> EpisodeTree:
        """Start a new episode. The same seed and the same actions give the same tree.

        A task with a fixed, enumerable instance list (``task.num_instances()`` not None)
        plays instance ``task_index`` (default: ``seed``) modulo its length, so seeds 0..N-1
        visit every instance once.
        """
        if seed is None:
            seed = fresh_seed()
        self.seed = check_seed(seed)
        if self._runner is not None:
            self._runner.reset()
        n = self.task.num_instances()
        if n:
            index = self.seed if task_index is None else check_seed(task_index)
            self.instance: TaskInstance = self.task.instance(index % n)
        else:
            self.instance = self.task.make_instance(np.random.default_rng(self.seed))
        self.tree = EpisodeTree(
            env_id=self.env_id,
            seed=self.seed,
            limits=self.limits,
            task_kwargs=self.task_kwargs,
            instance=self.instance.model_dump(mode="json"),
            lam=self.lam,
            clock=0,
        )
        self._ctx: dict[str, NodeContext] = {}
        self._inbox: dict[str, list[tuple[str, str | None]]] = {}
        # observe() renders pending inbox items without committing them; the renders are kept
        # (node -> [(items covered, text)]) so commit() writes exactly the text that was shown
        self._shown: dict[str, list[tuple[int, str]]] = {}
        self._refused: set[str] = set()
        self._held: dict[str, list[tuple[str, str | None]]] = {}  # items that did not fit an observation
        self._seqs: dict[str, list[int] | None] = {}  # recorded prompt+completion token ids per node
        self._open: dict[str, list[str]] = {}
        self._waiting: dict[str, set[str] | str] = {}
        self._queue: deque[str] = deque()
        self._queued: set[str] = set()
        self._outcome = StepOutcome(node="")
        pool = self.limits.tree_step_budget
        self._pool = pool
        budget = self.limits.max_steps_per_node if pool is None else min(pool, self.limits.max_steps_per_node)
        self._spawn(None, self.instance.goal, normalize(self.instance.args), None, budget)
        return self.tree

    def close(self) -> None:
        """Release what the engine holds outside Python (code mode: its sandbox REPLs); never raises."""
        if self._runner is not None:
            self._runner.close()

    @property
    def done(self) -> bool:
        """True once the root node has ended."""
        return self.tree is not None and self.tree.root.status.ended

    @property
    def tree_budget_left(self) -> int | None:
        """Unreserved steps left in the shared tree budget (None without one)."""
        return self._pool

    # ------------------------------------------------------------------ turn-taking
    @property
    def selection(self) -> str | None:
        """The node whose turn it is in the fair round-robin order (None when the episode is done)."""
        tree = self.tree
        if tree is None:
            raise ResetNeededError("call reset() before using the engine")
        q, nodes = self._queue, tree.nodes
        while q:
            head = q[0]
            if nodes[head].status is RUNNING:
                return head
            q.popleft()
            self._queued.discard(head)
        return None

    def active(self) -> str | None:
        """The :attr:`selection` (kept for callers of the earlier API)."""
        return self.selection

    def runnable(self) -> list[str]:
        """Every node awaiting an action, in spawn order."""
        return [n.id for n in self._tree().nodes.values() if n.status is RUNNING]

    def context(self, node_id: str) -> NodeContext:
        """The :class:`~rao_envs.task.NodeContext` of a node (its world state and RNG)."""
        return self._ctx[node_id]

    # ------------------------------------------------------------------ observations (queries)
    def observe(self, node_id: str | None = None) -> str:
        """The observation text of ``node_id`` (default: the :attr:`selection`): its newest message.

        A pure query: pending feedback and child results are shown as the message they will
        become, but only :meth:`commit` (or the node's next :meth:`step`) writes them into the
        transcript. A waiting node gets a note instead (never part of its transcript).
        """
        if node_id is None:
            node_id = self.selection or "0"
        node = self._tree().nodes.get(node_id)
        if node is None:
            node = self._node(node_id)  # raises with the list of nodes
        status = node.status
        if status is RUNNING:
            inbox = self._inbox.get(node_id)
            if inbox:
                return self._show(node, inbox)
            return node.transcript[-1]["content"]
        if status is WAITING:
            return self._clip(f"[node {node.id}] waiting for sub-agents: {', '.join(self._open[node.id])}")
        return f"[node {node.id}] {status.value}"

    def node_info(self, node_id: str | None = None) -> NodeInfo:
        """Structured facts about ``node_id`` (default: the :attr:`selection`) for a policy.

        Everything a scripted policy needs without parsing engine text: depth and the depth
        limit, steps left, the turn, every child's reported result, and whether the node's
        last request for sub-agents was refused. See :class:`~rao_envs.policies.base.NodeInfo`.
        """
        if node_id is None:
            node_id = self.selection or "0"
        nodes = self._tree().nodes
        node = nodes.get(node_id) or self._node(node_id)
        results: dict[str, ChildResult] = {}
        if node.children:
            for c in node.children:
                child = nodes[c]
                if child.status.ended and child.status is not CANCELLED:
                    results[c] = {"status": child.status.value, "result": child.result}
        return {
            "node": node_id,
            "parent": node.parent,
            "depth": node.depth,
            "max_depth": self.limits.max_depth,
            "goal": node.goal,
            "node_args": node.args,
            "steps_left": node.steps_left,
            "turn": node.steps_used,
            "children": list(node.children) if node.children else [],
            "child_results": results,
            "refused": node_id in self._refused,
        }

    def status_line(self, node: Node) -> str:
        """The budget line that ends every observation ("" when the task hides it: ``task.show_status``)."""
        if not self.task.show_status:
            return ""
        line = f"[node {node.id} | depth {node.depth}/{self.limits.max_depth} | steps left {node.steps_left}/{node.budget}"
        if self._pool is not None:
            line += f" | tree budget left {self._pool}"
        opened = self._open.get(node.id)
        if opened:
            shown = ", ".join(opened[:STATUS_IDS]) + (f" (+{len(opened) - STATUS_IDS} more)" if len(opened) > STATUS_IDS else "")
            line += f" | running sub-agents: {shown}"
        return line + "]"

    def _render(self, node: Node, items: list[tuple[str, str | None]]) -> tuple[str, int]:
        """The user message that delivers ``items`` to ``node``, and how many of them it holds.

        Everything fits in ``max_obs_chars``: when the parts are too long together, each is cut
        fairly (short parts whole, the rest to equal shares, each with a visible marker) and the
        status line is never cut. When even :data:`MIN_PART` characters per part do not fit,
        the message holds as many parts as fit and says the rest arrive with the next observation.
        """
        status = self.status_line(node)
        limit = self.limits.max_obs_chars
        if len(items) == 1:
            text = items[0][0]
            room = limit - len(status) - 2
            body = text if len(text) <= room else _cut(text, room)
            return self._clip(clean_text(f"{body}\n\n{status}" if status else body)), 1
        parts = [text for text, _ in items]
        if sum(map(len, parts)) + 2 * len(parts) + len(status) <= limit:
            return clean_text("\n\n".join(parts + [status] if status else parts)), len(parts)
        n, notice = len(parts), ""
        room = limit - len(status) - 2 * n
        if room < MIN_PART * n:  # deliver what fits now, the rest with the next observation
            notice = DEFER_NOTE.format(k=len(parts))  # the longest this note can be
            n = max(1, min(len(parts) - 1, (limit - len(status) - len(notice) - 4) // (MIN_PART + 2)))
            notice = DEFER_NOTE.format(k=len(parts) - n)
            room = limit - len(status) - len(notice) - 2 * (n + 1)
        caps = _fair_caps([len(p) for p in parts[:n]], room)
        out = [p if len(p) <= c else _cut(p, c) for p, c in zip(parts[:n], caps)]
        if notice:
            out.append(notice)
        return self._clip(clean_text("\n\n".join(out + [status] if status else out))), n

    def _show(self, node: Node, inbox: list[tuple[str, str | None]]) -> str:
        """Render the inbox items not shown yet as one message (kept for :meth:`commit`); return the newest.

        ``_shown[node]`` holds ``(items used so far, inbox length at the render, text)`` per render.
        """
        shown = self._shown.get(node.id)
        if shown is not None and shown[-1][1] == len(inbox):  # nothing new since the last render
            return shown[-1][2]
        start = shown[-1][0] if shown else 0
        text, used = self._render(node, inbox[start:])
        chunk = (start + used, len(inbox), text)
        if shown is None:
            self._shown[node.id] = [chunk]
        else:
            shown.append(chunk)
        return text

    # ------------------------------------------------------------------ writing messages
    def commit(self, node_id: str) -> list[Message]:
        """Write ``node_id``'s pending messages into its transcript; return the transcript.

        Exactly what :meth:`observe` showed is written (each shown render as one message, then
        anything newer); every child result among them counts as delivered once. Views and
        drivers call this when they hand a running node its observation (so ``transcript`` is
        what the policy saw); :meth:`step` calls it before the turn. Waiting and ended nodes
        keep their pending messages.
        """
        node = self._tree().nodes.get(node_id)
        if node is None:
            node = self._node(node_id)  # raises with the list of nodes
        if node.status is RUNNING and self._inbox.get(node_id):  # a waiting node gets its messages when it wakes
            self._commit(node)
        return node.transcript

    def _commit(self, node: Node) -> None:
        items = self._inbox.pop(node.id)
        shown = self._shown.pop(node.id, None) if self._shown else None
        transcript = node.transcript
        if shown is None and len(items) == 1 and items[0][1] is None:  # hot path: one unseen tool result
            status = self.status_line(node)
            text = clean_text(f"{items[0][0]}\n\n{status}" if status else items[0][0])
            if len(text) > self.limits.max_obs_chars:
                text = self._render(node, items)[0]
            transcript.append({"role": "user", "content": text})
            return
        used = 0
        for end, _, text in shown or ():
            transcript.append({"role": "user", "content": text})
            used = end
        if shown is None or shown[-1][1] < len(items):  # items arrived after the last render
            text, n = self._render(node, items[used:])
            transcript.append({"role": "user", "content": text})
            used += n
        if used < len(items):  # did not fit: held for the node's next observation
            self._held[node.id] = items[used:]
        nodes = self._tree().nodes
        for _, child in items[:used]:
            if child is not None:
                nodes[child].delivered += 1

    def _clip(self, text: str) -> str:
        return text if len(text) <= self.limits.max_obs_chars else _cut(text, self.limits.max_obs_chars)

    # ------------------------------------------------------------------ stepping
    def act(self, action: str | Action | Completion) -> StepOutcome:
        """Apply one turn of the :attr:`selection` and pass the turn on (fair round-robin order).

        Returns the :class:`StepOutcome`; ``outcome.next`` is the node to act next.
        Raises :class:`~rao_envs.errors.ResetNeededError` when the episode is over.
        """
        node_id = self.selection
        if node_id is None:
            raise ResetNeededError("the episode is over (or never started); call reset() to start a new one")
        out = self.step(node_id, action)
        # pass the turn on: node_id is still the queue's head (spawns and wake-ups join the tail);
        # hot path, so the selection's scan is inlined
        q, nodes = self._queue, self.tree.nodes
        q.popleft()
        if nodes[node_id].status is RUNNING:
            q.append(node_id)
        else:
            self._queued.discard(node_id)
        while q:
            head = q[0]
            if nodes[head].status is RUNNING:
                out.next = head
                break
            q.popleft()
            self._queued.discard(head)
        return out

    def step(self, node_id: str, action: str | Action | Completion) -> StepOutcome:
        """Apply one turn of ``node_id`` (any node from :meth:`runnable`); the selection does not move.

        ``action`` is the model's text, an :class:`~rao_envs.types.Action`, or a
        :class:`~rao_envs.policies.base.Completion` whose token ids and logprobs (when present)
        are recorded on the transcript. Agent mistakes become feedback; never raises for them.
        Raises :class:`~rao_envs.errors.NodeNotActiveError` if the node cannot act now.
        """
        tree = self._tree()
        node = tree.nodes.get(node_id)
        if node is None or node.status is not RUNNING:  # a running node implies a live root
            if tree.root.status.ended:
                raise ResetNeededError("the episode is over; call reset() to start a new one")
            state = "does not exist" if node is None else f"is {node.status.value}"
            raise NodeNotActiveError(
                f"node {node_id!r} {state}; act on a node from engine.runnable(): {self.runnable()}"
            )
        completion = None
        if type(action) is not str and isinstance(action, Completion):
            completion = action
            self._record_prompt(node, completion)  # before the commit, as the driver always did
            action = completion.text
        if self._inbox.get(node_id):
            self._commit(node)
        self._outcome = out = StepOutcome(node_id, [], [], {})
        # hot path: plain counters written straight into the models' __dict__ (pydantic's
        # __setattr__ costs ~1 µs each and these fields need no validation)
        clock = tree.__dict__["clock"] = tree.clock + 1
        nd = node.__dict__
        nd["steps_used"] += 1
        nd["last_acted"] = clock
        calls: list[Call] | None = None
        if type(action) is str:  # hot path: model text
            text = action
        elif isinstance(action, Action):
            text = self.protocol.format(action.name, action.args)
            calls = [Call(action.name, dict(action.args))]
        else:
            text = action.decode("utf-8", "replace") if isinstance(action, (bytes, bytearray)) else repr(action)
        if len(text) > self._max_stored:  # a model can send megabytes: store a capped copy (the parser sees all)
            text = text[: self._max_stored] + TRUNC_MARK.format(n=len(text) - self._max_stored)
        node.transcript.append({"role": "assistant", "content": clean_text(text)})
        if completion is not None:
            self._record_completion(node, completion)
        if self._held and node_id in self._held:  # what did not fit the last observation comes next
            self._inbox[node_id] = self._held.pop(node_id)
        if self._refused:
            self._refused.discard(node_id)
        if calls is None:
            try:
                calls = self.protocol.parse(action)
            except ParseError as exc:
                feedback: str | None = f"Error: {exc}"
            else:
                feedback = self._dispatch(node, calls) if self._runner is None else self._runner.turn(node, calls)
        else:
            feedback = self._dispatch(node, calls) if self._runner is None else self._runner.turn(node, calls)
        status = node.status
        if status is RUNNING or status is WAITING:
            if feedback is not None:
                inbox = self._inbox.get(node_id)
                if inbox is None:
                    self._inbox[node_id] = [(feedback, None)]
                else:
                    inbox.append((feedback, None))
            if status is RUNNING and nd["steps_used"] >= nd["budget"]:
                self._end(node, NodeStatus.TRUNCATED)
        if out.ended:
            nodes = tree.nodes
            out.rewards = {i: nodes[i].reward for i in out.ended}
            out.done = tree.root.status.ended
        return out

    # ------------------------------------------------------------------ recorded tokens
    def _record_prompt(self, node: Node, res: Completion) -> None:
        """Store what this turn's prompt adds (endpoint prompt ids) on the message before the turn.

        ``_seqs[node]`` holds the node's recorded prompt+completion ids so far, or None once a
        turn lacked ids or the template did not extend the conversation (then the node keeps
        no prompt ids at all, and rows render prompts with a tokenizer).
        """
        seqs = self._seqs
        if node.id in seqs and seqs[node.id] is None:
            return
        seq = seqs.get(node.id, [])
        p = res.prompt_token_ids
        if p is None or p[: len(seq)] != seq:
            for m in node.transcript:
                if m["role"] != "assistant":
                    m.pop("token_ids", None)
            seqs[node.id] = None
            return
        node.transcript[-1]["token_ids"] = p[len(seq):]
        seqs[node.id] = list(p)

    def _record_completion(self, node: Node, res: Completion) -> None:
        """Store the sampled token ids and logprobs on the assistant message just written."""
        msg, seqs = node.transcript[-1], self._seqs
        if res.token_ids is not None:
            msg["token_ids"] = list(res.token_ids)
            if seqs.get(node.id) is not None:
                seqs[node.id] = seqs[node.id] + list(res.token_ids)
        elif seqs.get(node.id) is not None:
            seqs[node.id] = None
        if res.logprobs is not None:
            msg["logprobs"] = list(res.logprobs)

    def fail(self, node_id: str, error: str) -> StepOutcome:
        """Mark a node ``infra_error`` from outside a tool (e.g. the LLM endpoint failed).

        The node's open children are cancelled, its parent is told, it is masked out of
        training, and the episode goes on. Does nothing for a node that already ended.
        """
        node = self._node(node_id)
        self._outcome = out = StepOutcome(node=node_id)
        if not node.status.ended:
            self._end(node, NodeStatus.INFRA_ERROR, error=str(error)[:2000])
            out.rewards = {i: self._tree().nodes[i].reward for i in out.ended}
            out.done = self._tree().root.status.ended
        out.next = self.selection
        return out

    def truncate(self, node_id: str, reason: str) -> StepOutcome:
        """End a running or waiting node as ``truncated`` (score 0, trainable) from outside a turn.

        For limits the driver enforces, e.g. a prompt that would exceed the model's context
        (``reason`` is kept in ``node.error``). Open children are cancelled and the parent is told,
        as when a node runs out of steps. Does nothing for a node that already ended.
        """
        node = self._node(node_id)
        self._outcome = out = StepOutcome(node=node_id)
        if not node.status.ended:
            self._end(node, NodeStatus.TRUNCATED, error=str(reason)[:2000])
            out.rewards = {i: self._tree().nodes[i].reward for i in out.ended}
            out.done = self._tree().root.status.ended
        out.next = self.selection
        return out

    def _dispatch(self, node: Node, calls: list[Call]) -> str | None:
        names = [c.name for c in calls]
        if len(calls) > 1 and any(n != "delegate" for n in names):
            return (
                f"Error: write one tool call per turn (only delegate may be repeated); "
                f"you wrote {len(calls)}: {', '.join(names[:8])}"
            )
        call = calls[0]
        if call.name in self._hidden_verbs:
            known = ", ".join([*self.task.tools, *self._verbs])
            return f"Error: unknown tool {call.name!r}; available tools: {known}"
        if call.name == "delegate":
            text = self._delegate(node, [c.args for c in calls])
            if text.startswith("Refused"):
                self._refused.add(node.id)
            return text
        if call.name == "finish":
            args = call.args
            if "result" in args:
                result = args["result"]
            elif len(args) == 1:
                result = next(iter(args.values()))
            else:
                result = args or None
            node.result = normalize(result)
            self._end(node, NodeStatus.FINISHED)
            return None
        if call.name == "wait":
            return self._wait(node, call.args)
        if call.name == "cancel":
            return self._cancel(node, call.args)
        spec = self.task.tools.get(call.name)
        if spec is None:
            known = ", ".join([*self.task.tools, "delegate", "wait", "cancel", "finish"])
            return f"Error: unknown tool {call.name[:60]!r}; available tools: {known}"
        try:
            return _as_text(spec.call(self.task, self._ctx[node.id], call.args))
        except ToolError as exc:
            return f"Error: {exc}"
        except Exception as exc:  # InfraError or a bug in task code: mark, don't crash
            kind = "" if isinstance(exc, InfraError) else f"{type(exc).__name__}: "
            self._end(node, NodeStatus.INFRA_ERROR, error=f"{kind}{exc}"[:2000])
            return None

    # ------------------------------------------------------------------ tree verbs
    def _delegate(self, node: Node, requests: list[dict[str, Any]]) -> str:
        lim, k = self.limits, len(requests)
        if node.depth + 1 > lim.max_depth:
            return (
                f"Refused: the maximum depth for delegation is reached (you are at depth {node.depth}, "
                f"max {lim.max_depth}); do the task yourself."
            )
        if lim.max_children_per_turn is not None and k > lim.max_children_per_turn:
            return f"Refused: at most {lim.max_children_per_turn} sub-agents per turn; you asked for {k}."
        if len(self._tree().nodes) + k > lim.max_nodes:
            return f"Refused: the episode tree reached its node limit ({lim.max_nodes} nodes); do it yourself."
        parent_ctx = self._ctx[node.id]
        plans = []
        for i, raw in enumerate(requests):
            where = f"delegate #{i + 1}: " if k > 1 else ""
            args = dict(raw)
            goal, context = args.pop("goal", None), args.pop("context", None)
            budget, wait = args.pop("budget", None), args.pop("wait", True)
            if goal is not None and not isinstance(goal, str):
                return f"Refused: {where}goal must be a string."
            if context is not None and not isinstance(context, str):
                return f"Refused: {where}context must be a string."
            context = None if context is None else clean_text(context)
            if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
                return f"Refused: {where}budget must be a positive integer number of steps."
            if not isinstance(wait, bool):
                return f"Refused: {where}wait must be true or false."
            try:
                goal, args = self.task.child_args(parent_ctx, goal or "", args)
            except ToolError as exc:
                return f"Refused: {where}{exc}"
            if not goal or not isinstance(goal, str):
                return f"Refused: {where}give the sub-agent a goal string."
            goal = clean_text(goal)
            b = min(budget or lim.max_steps_per_node, lim.max_steps_per_node)
            plans.append((goal, normalize(args), context, b, wait))
        if self._pool is not None:
            need = sum(p[3] for p in plans)
            if need > self._pool:
                return (
                    f"Refused: not enough tree budget: the sub-agents need {need} steps, {self._pool} are left; "
                    "ask for a smaller budget or do it yourself."
                )
        lines, waits = [], set()
        for goal, args, context, b, wait in plans:
            child = self._spawn(node, goal, args, context, b)
            lines.append(f"Started sub-agent {child.id} (budget {b} steps): {goal[:200]}")
            if wait:
                waits.add(child.id)
        if waits:
            node.status = WAITING
            self._waiting[node.id] = waits
            lines.append("Waiting for them to finish.")
        else:
            lines.append('They run in the background; use wait to collect their results.')
        return "\n".join(lines)

    def _wait(self, node: Node, args: dict[str, Any]) -> str:
        opened = self._open.get(node.id, [])
        what = args.get("ids", args.get("id", "all"))
        if isinstance(what, str) and what not in ("all", "next"):
            what = [what]
        if isinstance(what, list):
            bad = [i for i in what if not isinstance(i, str) or i not in self._tree().nodes or i not in node.children]
            if bad:
                return f"Error: not your sub-agents: {bad[:5]}; yours are {node.children[:20]}"
            targets = {i for i in what if i in opened}
        elif what in ("all", "next"):
            targets = set(opened)
        else:
            return 'Error: wait takes ids: a list of sub-agent ids, "next" or "all".'
        if not targets:
            return "Nothing to wait for: those sub-agents have already ended (their results are below)."
        pending = [c for _, c in self._inbox.get(node.id, []) if c is not None]
        if what == "next" and pending:
            return "A sub-agent has already ended (its result is below)."
        node.status = WAITING
        self._waiting[node.id] = "next" if what == "next" else targets
        return f"Waiting for sub-agents: {', '.join(sorted(targets))}."

    def _cancel(self, node: Node, args: dict[str, Any]) -> str:
        ids = args.get("ids", args.get("id"))
        ids = [ids] if isinstance(ids, str) else ids
        opened = self._open.get(node.id, [])
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i in opened for i in ids):
            return f"Error: cancel takes the id of one of your running sub-agents: {opened[:20]}"
        ids = list(dict.fromkeys(ids))  # a repeated id cancels once
        nodes = self._tree().nodes
        for i in ids:
            self._end(nodes[i], NodeStatus.CANCELLED)
            nodes[i].delivered += 1  # the parent's own cancel is its notice
        return f"Cancelled sub-agent(s): {', '.join(ids)}."

    # ------------------------------------------------------------------ spawning and ending
    def _spawn(self, parent: Node | None, goal: str, args: dict, context: str | None, budget: int) -> Node:
        tree = self._tree()
        nid = "0" if parent is None else f"{parent.id}.{len(parent.children)}"
        node = Node(
            id=nid,
            parent=None if parent is None else parent.id,
            depth=0 if parent is None else parent.depth + 1,
            slot=len(tree.nodes),
            goal=goal,
            args=args,
            context=context,
            budget=budget,
            spawned_at=None if parent is None else parent.steps_used,
            steps_used=0,  # passed explicitly so the hot path's direct writes stay in fields_set
            last_acted=None,
        )
        if parent is None:
            state = self.task.initial_state(self.instance)
        elif self.task.state_scope is StateScope.SHARED:
            state = self._ctx[parent.id].state
        elif self.task.state_scope is StateScope.FORK:
            state = copy.deepcopy(self._ctx[parent.id].state)
        else:
            state = self.task.child_state(self.instance, args)
        ctx = NodeContext(node, state, self.task, self.instance, self.seed)
        self._ctx[nid] = ctx
        node.spawn_snapshot = self.task.snapshot(state)
        tree.nodes[nid] = node
        if parent is not None:
            parent.children.append(nid)
            self._open.setdefault(parent.id, []).append(nid)
        if self._pool is not None:
            self._pool -= budget
        note = self.protocol.node_note(node) if hasattr(self.protocol, "node_note") else ""  # code mode: the notebook
        if not self.task.show_status:  # the task's own first message states everything (e.g. the paper's)
            first = self.task.node_prompt(ctx) + (f"\n\n{note}" if note else "")
        else:
            if node.depth < self.limits.max_depth:
                deleg = f"You may delegate sub-tasks to sub-agents (depth {node.depth} of max {self.limits.max_depth})."
            else:
                deleg = "You cannot delegate: the maximum depth is reached, so do everything yourself."
            if note:
                deleg += "\n" + note
            first = f"{self.task.node_prompt(ctx)}\n\n{deleg}\n\n{self.status_line(node)}"
        node.transcript = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": self._clip(first)},
        ]
        self._enqueue(nid)
        self._outcome.spawned.append(nid)
        return node

    def _compact_system_prompt(self) -> str:
        """``prompt_style="compact"``: the task's own prompt, the protocol's format and one line of action names."""
        described = self.protocol.describe()
        if "delegate" not in self._verbs:
            described = "\n".join(line for line in described.splitlines() if "delegate" not in line)
        verb_args = {"delegate": ["goal", *(n for n, _ in delegate_params(self.task.delegate_args_doc))], "wait": ["ids"],
                     "cancel": ["id"], "finish": ["result"]}
        code = hasattr(self.protocol, "action_space")  # code mode: Python functions; await does wait and cancel
        verb_names = {"delegate": "await launch_subagent", "finish": "finish"} if code else {v: v for v in verb_args}
        names = [f"{n}({', '.join(s.model.model_fields)})" for n, s in self.task.tools.items()]
        names += [f"{verb_names[v]}({', '.join(verb_args[v])})" for v in self._verbs if v in verb_names]
        return f"{self.task.system_prompt}\n\n# Action space\n{described}\nActions: {', '.join(names)}."

    def _enqueue(self, nid: str) -> None:
        if nid not in self._queued:
            self._queued.add(nid)
            self._queue.append(nid)

    def _end(self, node: Node, status: NodeStatus, error: str | None = None) -> None:
        tree = self._tree()
        node.status = status
        node.ended_at = tree.clock
        if error is not None:
            node.error = clean_text(error)
        self._waiting.pop(node.id, None)
        if self._runner is not None:
            self._runner.node_ended(node)
        for child_id in list(self._open.get(node.id, [])):  # a node's open children die with it
            self._end(tree.nodes[child_id], NodeStatus.CANCELLED)
        if status is NodeStatus.FINISHED:
            try:
                node.score = min(1.0, max(0.0, float(self.task.score(self._ctx[node.id]))))
            except Exception as exc:  # a crashing verifier is an infrastructure failure
                node.status, node.error = NodeStatus.INFRA_ERROR, clean_text(f"verifier failed: {type(exc).__name__}: {exc}"[:2000])
        elif status is not NodeStatus.INFRA_ERROR:
            node.score = 0.0
        if node.status is not NodeStatus.INFRA_ERROR:
            kids = [c.score for c in tree.children(node.id) if not c.masked and c.score is not None]
            node.reward = local_reward(node.score, kids, self.lam)
        if self._pool is not None:
            self._pool += node.budget - node.steps_used
        self._outcome.ended.append(node.id)
        if node.parent is not None:
            self._notify_parent(tree.nodes[node.parent], node)

    def _notify_parent(self, parent: Node, child: Node) -> None:
        opened = self._open[parent.id]
        opened.remove(child.id)
        if parent.status.ended or child.status is NodeStatus.CANCELLED:
            return
        if self._runner is not None:  # code mode: the result lands in the parent's suspended cell
            self._runner.child_ended(parent, child)
            return
        if child.status is NodeStatus.FINISHED:
            text = f"[sub-agent {child.id} finished] {_as_text(child.result)}"
        elif child.status is NodeStatus.TRUNCATED:
            text = f"[sub-agent {child.id}] did not finish before its step budget was exhausted."
        else:
            text = f"[sub-agent {child.id}] failed because of an infrastructure error (not your fault)."
        self._inbox.setdefault(parent.id, []).append((text, child.id))
        spec = self._waiting.get(parent.id)
        if spec is None:
            return
        if spec != "next":
            spec.discard(child.id)
            if spec:
                return
        del self._waiting[parent.id]
        parent.status = RUNNING
        if parent.steps_left <= 0:
            self._end(parent, NodeStatus.TRUNCATED)
        else:
            self._enqueue(parent.id)

    # ------------------------------------------------------------------ helpers
    def _tree(self) -> EpisodeTree:
        if self.tree is None:
            raise ResetNeededError("call reset() before using the engine")
        return self.tree

    def _node(self, node_id: str) -> Node:
        node = self._tree().nodes.get(node_id)
        if node is None:
            raise NodeNotActiveError(f"no node {node_id!r} in this tree; nodes: {list(self._tree().nodes)[:20]}")
        return node

    def _system_prompt(self) -> str:
        if self.prompt_style == "compact":
            return self._compact_system_prompt()
        examples = self.protocol.examples([(name, self.task.example_args(name)) for name in (*self.task.tools, *self._verbs)])
        if hasattr(self.protocol, "action_space"):  # code mode: tools as Python functions
            return (
                f"{self.task.system_prompt}\n\n# Action space\n{self.protocol.describe()}\n\n"
                f"Functions in your notebook:\n{self.protocol.action_space(self.task, self._verbs)}\n\n{examples}\n\n"
                "Every step (turn) costs one step of your budget, whatever it does."
            )
        extra = self.task.delegate_args_doc  # task arguments: required, so right after goal (valid Python order)
        default_verbs = {
            "delegate": f"- delegate(goal: str{extra}, context: str | None = None, budget: int | None = None, wait: bool = True): "
            "start a sub-agent (a fresh copy of you, without your history) on a sub-task. Its finish "
            "result comes back to you tagged with its id. Several delegate calls in one turn run in parallel.",
            "wait": '- wait(ids: list[str] | "next" | "all" = "all"): wait for sub-agents started with wait=false.',
            "cancel": "- cancel(id: str): stop one of your running sub-agents.",
            "finish": "- finish(result: any): end your task; result goes back to whoever gave you the task.",
        }
        verbs = "\n".join(self.task.describe_verb(v, default_verbs[v]) for v in self._verbs)
        described = self.protocol.describe()
        if "delegate" not in self._verbs:  # a single-agent control: no word of sub-agents
            described = "\n".join(line for line in described.splitlines() if "delegate" not in line)
        tools = self.task.describe_tools()
        return (
            f"{self.task.system_prompt}\n\n# Action space\n{described}\n\n"
            f"Tools:\n{tools + chr(10) if tools else ''}{verbs}\n\n{examples}\n\n"
            "Every step (turn) costs one step of your budget, whatever it does."
        )
