"""Async rollout driver (DESIGN §2.3): many episode trees against one policy or LLM endpoint.

    trees = await rollout("Name-v0", policy, seeds=range(64), group_size=8, concurrency=32)
    trees = await rollout("Name-v0", OpenAIPolicy("http://127.0.0.1:8000/v1", "my-model"), [0, 1])

``policy`` is a chat policy (:mod:`rao_envs.policies`): an async (or plain) callable
``policy(messages) -> text`` or ``policy(messages, info) -> text | Completion`` — ``messages``
is the node's chat so far (OpenAI format), ``info`` a :class:`~rao_envs.policies.NodeInfo` —
or an :class:`~rao_envs.policies.OpenAIPolicy` for any OpenAI-compatible chat endpoint
(vLLM, SGLang, llama.cpp server, Ollama). This module only orchestrates: the client lives in
:mod:`rao_envs.policies.openai`, the fair cap in :mod:`rao_envs.limiter`, tree files in
:mod:`rao_envs.types`.

**Order of steps (determinism).** Each tree runs in *rounds*: the driver asks the policy for
an action of every runnable node of the tree at once (siblings concurrently), then applies
the answers in slot order (``node.slot``, spawn order), whatever order they arrive in; then
the next round. So the same seeds and the same answers give the same trees, even with
shared state (a ``shared`` state scope) and any latency: :func:`run_sync` is the in-process
reference with a synchronous ``(obs, info)`` policy, and it produces identical trees.
Answers are applied as soon as every lower slot is applied; when an applied action ends a
node (a parent's ``finish`` cancels its open children), the in-flight requests of the nodes
it ended are cancelled at once, freeing their concurrency slots.

**Concurrency.** One cap (``concurrency``) on requests in flight, shared by every tree of the
batch and granted round-robin across trees (:class:`FairLimiter`), so a huge tree cannot starve
the others. **Failures.** ``OpenAIPolicy`` retries transient errors (connection errors,
timeouts, 408/409/425/429/5xx, malformed bodies) with exponential backoff and jitter; a
request that still fails marks its node ``infra_error`` (masked out of training, the parent
is told) and the batch goes on. **Tokens.** The driver hands each answer to the engine as a
:class:`~rao_envs.policies.Completion`; the engine records its token ids and logprobs on the
transcript when the endpoint returned them (see :mod:`rao_envs.rows`), so rows never
re-tokenise sampled text. **Policy version.** ``policy_version`` (an int, or a callable read
at request time) is stored on each node when its first request is sent: the oldest policy
that acted for the node, which is what off-policy filters need. **Context limit.**
``max_context_tokens`` (the paper's 8K regime) truncates a node whose next prompt would exceed
it, counted from the endpoint's usage figures (or prompt token ids) plus an estimate of the
newer messages (``count_tokens``); an endpoint's context-length 400
(:class:`~rao_envs.policies.ContextLengthError`) truncates the node too. Truncation is a normal,
trainable outcome (score 0), never ``infra_error``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rao_envs.errors import ConfigError, RaoEnvsError
from rao_envs.limiter import FairLimiter
from rao_envs.policies.base import AgentPolicy, Completion, ContextLengthError, NodeInfo, PolicyError, as_chat_policy
from rao_envs.registration import engine_factory
from rao_envs.seeding import check_seed
from rao_envs.tree import TreeEngine
from rao_envs.types import EpisodeTree, NodeStatus

RUNNING = NodeStatus.RUNNING


# ------------------------------------------------------------------------------ the driver
@dataclass
class RolloutStats:
    """Counters of one :class:`RolloutDriver` run."""

    trees: int = 0
    nodes: int = 0
    calls: int = 0
    infra_errors: int = 0
    context_truncations: int = 0
    cancelled_requests: int = 0
    wall_s: float = 0.0
    peak_in_flight: int = 0
    errors: list[str] = field(default_factory=list)


def _plain(messages: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _no_open_children(tree: EpisodeTree, nid: str) -> bool:
    """True when every child of ``nid`` has ended (none can deliver to it any more)."""
    return all(tree.nodes[c].status.ended for c in tree.nodes[nid].children)


@dataclass
class _TreeRun:
    """Per-tree state of a driver run: the engine, its fairness key, requests in flight."""

    engine: TreeEngine
    key: int
    base: dict[str, Any]
    pending: dict[str, asyncio.Task] = field(default_factory=dict)
    context: dict[str, tuple[int, int]] = field(default_factory=dict)  # node -> (tokens so far, messages they cover)


def _approx_tokens(text: str) -> int:
    """A tokenizer-free estimate: about 4 characters per token (pass ``count_tokens`` for exact counts)."""
    return (len(text) + 3) // 4


class RolloutDriver:
    """Runs trees concurrently against one policy under one fair concurrency cap.

    Most users call :func:`rollout`; keep a driver to read :attr:`stats` afterwards.
    Concurrent :meth:`run` calls (e.g. two tasks at once) share the driver's cap.
    """

    def __init__(
        self,
        policy: Any,
        *,
        concurrency: int = 8,
        policy_version: int | Callable[[], int] | None = None,
        progress: bool = False,
        strict: bool = False,
        max_context_tokens: int | None = None,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        if max_context_tokens is not None and (isinstance(max_context_tokens, bool) or not isinstance(max_context_tokens, int) or max_context_tokens < 1):
            raise ConfigError(f"max_context_tokens must be a positive int (e.g. 8192) or None, got {max_context_tokens!r}")
        self.max_context_tokens, self.count_tokens = max_context_tokens, count_tokens or _approx_tokens
        self.raw_policy = policy
        self.policy = as_chat_policy(policy)
        self.concurrency = concurrency
        self.policy_version = policy_version
        self.progress, self.strict = progress, strict
        self.stats = RolloutStats()
        self._limiter = FairLimiter(concurrency)  # shared by concurrent run() calls of this driver
        self._keys = 0
        self._bar = None

    def _version(self) -> int | None:
        v = self.policy_version
        return v() if callable(v) else v

    async def run(
        self,
        env_id: str,
        seeds: Iterable[int],
        *,
        group_size: int = 1,
        env_kwargs: dict[str, Any] | None = None,
    ) -> list[EpisodeTree]:
        """Run ``group_size`` trees for each seed; returns them seed-major (seed 0's G trees first)."""
        if group_size < 1:
            raise ConfigError(f"group_size must be at least 1, got {group_size}")
        seeds = [check_seed(s) for s in seeds]
        factory = engine_factory(env_id, **dict(env_kwargs or {}))  # resolved once: fails fast on a bad id or kwargs
        jobs = [(self._keys + k, s, g) for k, (s, g) in enumerate((s, g) for s in seeds for g in range(group_size))]
        self._keys += len(jobs)
        t0 = time.perf_counter()
        if self.progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=len(jobs), unit="tree", desc=f"rollout {env_id}", dynamic_ncols=True)
        try:
            trees = await asyncio.gather(*(self._run_tree(k, factory, env_id, s, g) for k, s, g in jobs))
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
        self.stats.wall_s += time.perf_counter() - t0
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, self._limiter.in_use_peak)
        return list(trees)

    async def _ask(self, key: int, messages: list[dict[str, str]], info: NodeInfo) -> Completion:
        await self._limiter.acquire(key)
        try:
            self.stats.calls += 1
            return await self.policy(messages, info)
        finally:
            self._limiter.release()

    async def _run_tree(self, key: int, factory: Callable[[], TreeEngine], env_id: str, seed: int, group: int) -> EpisodeTree:
        engine = factory()
        tree = engine.reset(seed)
        tree.tree_id = f"{env_id}:{seed}#g{group}"
        run = _TreeRun(engine, key, {"env_id": env_id, "seed": seed, "tree_id": tree.tree_id, "group": group})
        try:
            while not engine.done:
                await self._round(run)
        except RaoEnvsError:  # a user mistake: say so, do not mask it as infrastructure
            raise
        except Exception as exc:  # an engine or driver bug must not crash the batch: mask the tree
            if self.strict:
                raise
            msg = f"driver error: {type(exc).__name__}: {exc}"
            self.stats.errors.append(f"{tree.tree_id}: {msg}")
            engine.fail("0", msg)
        finally:
            for t in run.pending.values():
                t.cancel()
            await asyncio.gather(*run.pending.values(), return_exceptions=True)
            if engine._runner is not None:  # code mode: give the sandbox back
                await asyncio.to_thread(engine.close)
        self.stats.trees += 1
        self.stats.nodes += len(tree.nodes)
        self.stats.infra_errors += sum(1 for n in tree.nodes.values() if n.status is NodeStatus.INFRA_ERROR)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(calls=self.stats.calls, infra=self.stats.infra_errors, refresh=False)
        return tree

    def _context_exceeded(self, run: _TreeRun, nid: str, messages: list[dict[str, Any]]) -> bool:
        """True (and the node truncated) when ``nid``'s next prompt would exceed ``max_context_tokens``."""
        known, covered = run.context.get(nid, (0, 0))
        tokens = known + sum(self.count_tokens(m["content"]) for m in messages[covered:])
        if tokens <= self.max_context_tokens:
            return False
        self._truncate(run, nid, f"context limit: the next prompt has about {tokens} tokens, over max_context_tokens={self.max_context_tokens}")
        return True

    def _truncate(self, run: _TreeRun, nid: str, reason: str) -> None:
        self.stats.context_truncations += 1
        run.engine.truncate(nid, reason)

    def _issue(self, run: _TreeRun, nid: str) -> None:
        """Observe ``nid`` now and send its request (the observation must already be final)."""
        engine = run.engine
        messages = engine.commit(nid)  # the request carries the pending feedback/results: deliver them
        if self.max_context_tokens is not None and self._context_exceeded(run, nid, messages):
            return
        info: NodeInfo = {**run.base, **engine.node_info(nid)}  # type: ignore[typeddict-item]
        node = engine.tree.nodes[nid]
        if node.policy_version is None:
            node.policy_version = self._version()
        run.pending[nid] = asyncio.create_task(self._ask(run.key, _plain(messages), info))

    def _count(self, run: _TreeRun, nid: str, res: Completion) -> None:
        """Record ``nid``'s context after this answer: usage figures (or token ids) when the endpoint gave them."""
        messages = run.engine.tree.nodes[nid].transcript
        prompt = res.prompt_tokens or (len(res.prompt_token_ids) if res.prompt_token_ids else None)
        if prompt:
            done = res.completion_tokens if res.completion_tokens is not None else (
                len(res.token_ids) if res.token_ids is not None else self.count_tokens(res.text))
            run.context[nid] = (prompt + done, len(messages) + 1)  # covers the prompt and this answer
        else:
            known, covered = run.context.get(nid, (0, 0))
            tokens = known + sum(self.count_tokens(m["content"]) for m in messages[covered:]) + self.count_tokens(res.text)
            run.context[nid] = (tokens, len(messages) + 1)

    async def _round(self, run: _TreeRun) -> None:
        """One round: every runnable node acts once; answers are applied in slot order.

        A node whose next observation is already final (it has no open children, and the tree
        has no shared step budget whose count appears in observations) sends its next request
        as soon as its action is applied, without waiting for the round to end: this removes
        the round barrier for requests, never changes what any node observes, and the
        application order stays (round, slot).
        """
        engine, pending = run.engine, run.pending
        tree = engine.tree
        ids = engine.runnable()  # spawn (slot) order
        if not ids:
            raise RuntimeError("the tree is not done but no node can act (engine bug)")
        for nid in ids:
            if nid not in pending and tree.nodes[nid].status is RUNNING:
                self._issue(run, nid)
        early = engine.tree_budget_left is None
        for nid in ids:
            if engine.done:
                return
            node = tree.nodes[nid]
            task = pending.pop(nid, None)
            if node.status is not RUNNING or task is None:
                continue  # ended earlier in this round (its request was cancelled)
            try:
                res: Completion | BaseException = await task
            except PolicyError as exc:
                res = exc
            except RaoEnvsError:  # a user bug with a typed message (e.g. the policy returned a non-string)
                raise
            except Exception as exc:  # a user policy's own error
                if self.strict:
                    raise
                res = exc
            if engine.done or node.status is not RUNNING:
                continue
            touched = [nid]
            if isinstance(res, ContextLengthError):  # the endpoint's own context limit: a normal truncation
                self._truncate(run, nid, str(res))
                touched.append(node.parent)
            elif isinstance(res, BaseException):
                kind = "" if isinstance(res, PolicyError) else f"policy raised {type(res).__name__}: "
                engine.fail(nid, f"{kind}{res}")
                touched.append(node.parent)
            else:
                if self.max_context_tokens is not None:
                    self._count(run, nid, res)
                if engine._runner is None:
                    out = engine.step(nid, res)  # the engine records the completion's token ids and logprobs
                else:  # code mode: the cell runs in a sandbox, off the event loop
                    out = await asyncio.to_thread(engine.step, nid, res)
                touched += out.spawned + [tree.nodes[e].parent for e in out.ended]
            for other in list(pending):  # cancel requests of nodes this action ended
                if engine.done or tree.nodes[other].status is not RUNNING:
                    pending.pop(other).cancel()
                    self.stats.cancelled_requests += 1
            if early and not engine.done:
                for c in dict.fromkeys(touched):
                    if c is not None and c not in pending and tree.nodes[c].status is RUNNING and _no_open_children(tree, c):
                        self._issue(run, c)


async def rollout(
    env_id: str,
    policy: Any,
    seeds: int | Iterable[int],
    *,
    group_size: int = 1,
    concurrency: int = 8,
    env_kwargs: dict[str, Any] | None = None,
    policy_version: int | Callable[[], int] | None = None,
    progress: bool = False,
    strict: bool = False,
    max_context_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    backend: str = "local",
    address: str | None = None,
    backend_options: dict[str, Any] | None = None,
    **unknown: Any,
) -> list[EpisodeTree] | EpisodeTree:
    """Run ``group_size`` trees per seed of ``env_id`` against ``policy`` (module docstring).

    ``seeds`` an int returns one :class:`EpisodeTree` (with ``group_size=1``); an iterable
    returns a list, seed-major. ``concurrency`` caps requests in flight across all trees.
    ``strict=True`` re-raises policy and driver exceptions instead of masking the node.
    ``max_context_tokens`` (the paper's 8K regime: 8192) truncates a node whose next prompt
    would be longer (counted from the endpoint's usage figures, the rest with ``count_tokens``,
    default about 4 characters a token); an endpoint's context-length 400 truncates it too.
    Task, limit and engine arguments go in ``env_kwargs`` (as in ``make``).
    ``backend="ray"`` runs the trees on a Ray cluster at ``address`` (``"auto"``,
    ``"HOST:PORT"``, or None for a local Ray), same trees and return shape;
    ``backend_options`` go to :class:`rao_envs.distributed.RayRolloutDriver` (``workers``,
    ``worker_options``, ``max_retries``, ...).
    """
    if unknown:
        raise ConfigError(
            f"rollout got unknown argument(s) {sorted(unknown)}; task, limit and engine arguments go in "
            f"env_kwargs, e.g. rollout(..., env_kwargs={{{next(iter(unknown))!r}: ...}})"
        )
    if isinstance(seeds, bool) or not isinstance(seeds, (int, Iterable)):
        raise ConfigError(f"seeds must be an int or an iterable of ints, got {type(seeds).__name__}")
    if backend != "local" or address is not None or backend_options:
        if backend != "ray":
            raise ConfigError(f"backend must be 'local' or 'ray', got {backend!r}; address= and backend_options= are for "
                              "backend='ray'")
        if max_context_tokens is not None or count_tokens is not None:
            raise ConfigError("max_context_tokens/count_tokens are not supported with backend='ray' yet; use the local driver")
        from rao_envs.distributed.driver import ray_rollout

        return await ray_rollout(env_id, policy, seeds, group_size=group_size, concurrency=concurrency, env_kwargs=env_kwargs,
                                 policy_version=policy_version, progress=progress, strict=strict, address=address,
                                 **dict(backend_options or {}))
    driver = RolloutDriver(policy, concurrency=concurrency, policy_version=policy_version, progress=progress, strict=strict,
                           max_context_tokens=max_context_tokens, count_tokens=count_tokens)
    if isinstance(seeds, int):
        trees = await driver.run(env_id, [seeds], group_size=group_size, env_kwargs=env_kwargs)
        return trees[0] if group_size == 1 else trees
    return await driver.run(env_id, seeds, group_size=group_size, env_kwargs=env_kwargs)


def run_rollout(env_id: str, policy: Any, seeds: int | Iterable[int], **kwargs: Any):
    """:func:`rollout` from synchronous code (``asyncio.run``)."""
    return asyncio.run(rollout(env_id, policy, seeds, **kwargs))


# ------------------------------------------------------------------------------ reference
def run_sync(engine: TreeEngine, policy: AgentPolicy, seed: int | None = None) -> EpisodeTree:
    """The in-process reference: the driver's rounds with a synchronous ``(obs, info)`` agent policy.

    Each round asks ``policy`` for every runnable node (observations taken, and delivered,
    before any is applied), then applies the actions in slot order. Same seed and policy →
    the same tree as :func:`rollout` with ``OraclePolicy`` or a server answering from that policy.
    """
    tree = engine.reset(seed)
    while not engine.done:
        ids = engine.runnable()
        actions = []
        for nid in ids:
            text = engine.commit(nid)[-1]["content"]
            node = tree.nodes[nid]
            actions.append((nid, policy({"text": text, "node": nid, "depth": node.depth}, engine.node_info(nid))))
        for nid, action in actions:
            if engine.done:
                break
            if tree.nodes[nid].status is RUNNING:
                engine.step(nid, action)
    return tree
