"""Async rollout driver (DESIGN §2.3): many episode trees against one policy or LLM endpoint.

    trees = await rollout("TextCraft-v0", policy, seeds=range(64), group_size=8, concurrency=32)
    trees = await rollout("Toy-v0", OpenAIPolicy("http://127.0.0.1:8000/v1", "my-model"), [0, 1])

``policy`` is an async (or plain) callable ``policy(messages) -> text`` or
``policy(messages, info) -> text | Completion`` — ``messages`` is the node's chat so far
(OpenAI format), ``info`` a :data:`NodeInfo` dict — or an :class:`OpenAIPolicy` for any
OpenAI-compatible chat endpoint (vLLM, SGLang, llama.cpp server, Ollama).

**Order of steps (determinism).** Each tree runs in *rounds*: the driver asks the policy for
an action of every runnable node of the tree at once (siblings concurrently), then applies
the answers in slot order (``node.slot``, spawn order), whatever order they arrive in; then
the next round. So the same seeds and the same answers give the same trees, even with
shared state (TextCraft's inventory) and any latency: :func:`run_sync` is the in-process
reference with a synchronous ``(obs, info)`` policy, and it produces identical trees.
Answers are applied as soon as every lower slot is applied; when an applied action ends a
node (a parent's ``finish`` cancels its open children), the in-flight requests of the nodes
it ended are cancelled at once, freeing their concurrency slots.

**Concurrency.** One cap (``concurrency``) on requests in flight, shared by every tree of the
batch and granted round-robin across trees (:class:`FairLimiter`), so a huge tree cannot starve
the others. **Failures.** :class:`OpenAIPolicy` retries transient errors (connection errors,
timeouts, 408/409/425/429/5xx, malformed bodies) with exponential backoff and jitter; a
request that still fails marks its node ``infra_error`` (masked out of training, the parent
is told) and the batch goes on. **Tokens.** Token ids and logprobs are recorded on the
transcript when the endpoint returns them (see :mod:`rao_envs.rows`), so rows never
re-tokenise sampled text. **Policy version.** ``policy_version`` (an int, or a callable read
at request time) is stored on each node when its first request is sent: the oldest policy
that acted for the node, which is what off-policy filters need.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import random
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rao_envs.errors import ConfigError
from rao_envs.registration import make_engine
from rao_envs.types import EpisodeTree, NodeStatus

RUNNING = NodeStatus.RUNNING
NodeInfo = dict[str, Any]
"""What a policy learns about the node it acts for: ``env_id``, ``seed``, ``tree_id``,
``group``, ``node``, ``depth``, ``goal``, ``node_args``, ``steps_left``, ``turn``."""

TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


@dataclass
class Completion:
    """A policy's answer: the text, plus token ids/logprobs when the endpoint reported them.

    ``prompt_token_ids`` are the ids of the whole rendered prompt (vLLM with
    ``return_token_ids``); the driver stores only what each turn adds.
    """

    text: str
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    prompt_token_ids: list[int] | None = None
    finish_reason: str | None = None


class PolicyError(RuntimeError):
    """The policy endpoint failed (after retries): the node becomes ``infra_error``."""


# ------------------------------------------------------------------------------ policies
def as_policy(policy: Any) -> Callable[[list[dict[str, str]], NodeInfo], Awaitable[Completion]]:
    """Normalise ``policy`` to ``async (messages, info) -> Completion``.

    Accepts async or plain callables taking ``(messages)`` or ``(messages, info)`` and
    returning text or a :class:`Completion`.
    """
    if not callable(policy):
        raise ConfigError(f"policy must be callable (messages[, info]) -> text, or an OpenAIPolicy; got {type(policy).__name__}")
    try:
        params = [
            p for p in inspect.signature(policy).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
        two = len(params) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)
    except (TypeError, ValueError):
        two = True

    async def call(messages: list[dict[str, str]], info: NodeInfo) -> Completion:
        out = policy(messages, info) if two else policy(messages)
        if inspect.isawaitable(out):
            out = await out
        if isinstance(out, Completion):
            return out
        if isinstance(out, str):
            return Completion(out)
        raise PolicyError(f"policy returned {type(out).__name__}; return a str or a rao_envs.rollout.Completion")

    return call


class OraclePolicy:
    """A task's scripted ``(obs, info) -> text`` oracle as an async policy, one oracle per tree.

    ``OraclePolicy(lambda: task.oracle())``; the oracle sees the node's newest message as
    ``obs["text"]`` and ``info`` with ``node``, ``depth``, ``goal``, ``node_args``, ``steps_left``.
    """

    def __init__(self, factory: Callable[[], Callable[[Any, dict[str, Any]], str]]) -> None:
        self.factory = factory
        self._oracles: dict[str, Callable[[Any, dict[str, Any]], str]] = {}

    async def __call__(self, messages: list[dict[str, str]], info: NodeInfo) -> str:
        """The oracle's action for the node described by ``info``."""
        oracle = self._oracles.get(info["tree_id"])
        if oracle is None:
            oracle = self._oracles[info["tree_id"]] = self.factory()
        obs = {"text": messages[-1]["content"], "node": info["node"], "depth": info["depth"]}
        return oracle(obs, info)


class OpenAIPolicy:
    """An OpenAI-compatible chat-completions endpoint as a policy (needs ``httpx``).

    ``OpenAIPolicy("http://127.0.0.1:8000/v1", "Qwen/Qwen3-0.6B", temperature=1.0)``. Sends
    ``logprobs: true, top_logprobs: 0`` (disable with ``logprobs=False``), a per-request ``seed`` derived from
    the tree seed and node when ``seed`` is given, ``extra_body`` verbatim (e.g.
    ``{"return_token_ids": True}`` for vLLM), and ``X-Rao-Tree``/``X-Rao-Node`` headers
    (ignored by servers; handy for routing and logs). Token ids come from the response
    (vLLM ``token_ids``/``prompt_token_ids`` or ``token_id:N`` tokens) or, for llama.cpp's
    Python server, from its ``/extras/tokenize`` route when the count matches the logprobs.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        temperature: float | None = 1.0,
        top_p: float | None = None,
        max_tokens: int | None = 512,
        logprobs: bool = True,
        seed: int | None = None,
        stop: list[str] | None = None,
        extra_body: dict[str, Any] | None = None,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 120.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        server_tokenize: bool = True,
        max_connections: int = 256,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, e.g. http://127.0.0.1:8000/v1; got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.params = {k: v for k, v in {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens,
                                          "stop": stop}.items() if v is not None}
        self.logprobs, self.seed = logprobs, seed
        self.extra_body = dict(extra_body or {})
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.headers.update(headers or {})
        self.timeout, self.retries, self.backoff, self.max_backoff = timeout, retries, backoff, max_backoff
        self.max_connections = max_connections
        self._server_tokenize = server_tokenize
        self._client = None
        self._loop = None
        self.calls = self.retried = self.failed = 0
        self.completion_tokens = 0

    def _http(self):
        try:
            import httpx
        except ImportError:  # pragma: no cover - depends on the environment
            raise ConfigError('OpenAIPolicy needs httpx: pip install "rao_envs[rollout]"') from None
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            limits = httpx.Limits(max_connections=self.max_connections, max_keepalive_connections=self.max_connections)
            self._client = httpx.AsyncClient(timeout=self.timeout, limits=limits, headers=self.headers)
            self._loop = loop
        return httpx, self._client

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def body(self, messages: list[dict[str, str]], info: NodeInfo | None = None) -> dict[str, Any]:
        """The JSON body of one chat-completions request."""
        body: dict[str, Any] = {"model": self.model, "messages": messages, **self.params}
        if self.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = 0  # llama.cpp's Python server returns no logprobs without it
        if self.seed is not None and info is not None:
            key = f"{self.seed}:{info.get('seed')}:{info.get('tree_id')}:{info.get('node')}:{info.get('turn')}"
            body["seed"] = _stable_hash(key) % (2**31)
        body.update(self.extra_body)
        return body

    async def __call__(self, messages: list[dict[str, str]], info: NodeInfo | None = None) -> Completion:
        """One chat completion with retries; raises :class:`PolicyError` when it keeps failing."""
        httpx, client = self._http()
        body = self.body(messages, info)
        headers = {}
        if info is not None:
            headers = {"X-Rao-Tree": str(info.get("tree_id", "")), "X-Rao-Node": str(info.get("node", ""))}
        url = f"{self.base_url}/chat/completions"
        last = "no attempt"
        self.calls += 1
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * (0.5 + random.random())
                await asyncio.sleep(delay)
            try:
                resp = await client.post(url, json=body, headers=headers)
            except httpx.TimeoutException as exc:
                last = f"timeout after {self.timeout}s ({type(exc).__name__})"
                continue
            except httpx.TransportError as exc:
                last = f"connection error: {type(exc).__name__}: {exc}"
                continue
            if resp.status_code != 200:
                last = f"HTTP {resp.status_code}: {resp.text[:300]}"
                if resp.status_code in TRANSIENT_STATUS or resp.status_code >= 500:
                    continue
                break  # 4xx other than the transient ones: the request itself is wrong
            try:
                data = resp.json()
                out = self._parse(data)
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                last = f"malformed response ({type(exc).__name__}: {exc}): {resp.text[:200]!r}"
                continue
            if out.token_ids is None and out.logprobs and self._server_tokenize:
                out.token_ids = await self._tokenize(client, out.text, len(out.logprobs))
            self.completion_tokens += len(out.token_ids or out.logprobs or [])
            return out
        self.failed += 1
        raise PolicyError(f"{url}: {last} (after {attempt + 1} attempt(s))")

    @staticmethod
    def _parse(data: dict[str, Any]) -> Completion:
        choice = data["choices"][0]
        msg = choice["message"]
        text = msg.get("content")
        if not text and msg.get("tool_calls"):
            fn = msg["tool_calls"][0]["function"]
            args = fn.get("arguments")
            text = json.dumps({"name": fn["name"], "arguments": json.loads(args) if isinstance(args, str) else args})
        if not isinstance(text, str):
            if text is None:
                text = ""
            else:
                raise TypeError(f"message content is {type(text).__name__}, not text")
        logprobs = token_ids = None
        content = (choice.get("logprobs") or {}).get("content")
        if content:
            logprobs = [float(e["logprob"]) for e in content]
            ids = [_TOKEN_ID.fullmatch(str(e.get("token", ""))) for e in content]
            if all(ids):
                token_ids = [int(m.group(1)) for m in ids]
        if isinstance(choice.get("token_ids"), list):
            token_ids = [int(t) for t in choice["token_ids"]]
        prompt = data.get("prompt_token_ids") or choice.get("prompt_token_ids")
        if logprobs is not None and token_ids is not None and len(logprobs) != len(token_ids):
            logprobs = None  # misaligned: keep the ids, drop the logprobs
        return Completion(text, token_ids, logprobs, [int(t) for t in prompt] if prompt else None, choice.get("finish_reason"))

    async def _tokenize(self, client, text: str, n: int) -> list[int] | None:
        """Ids of ``text`` from llama.cpp's ``/extras/tokenize``, kept only when they match the n logprobs."""
        root = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        try:
            resp = await client.post(f"{root}/extras/tokenize", json={"input": text, "model": self.model})
        except Exception:  # noqa: BLE001 - an optional route: any failure means "not now"
            return None
        if resp.status_code in (404, 405):  # the server has no such route: stop asking
            self._server_tokenize = False
            return None
        try:
            ids = resp.json()["tokens"] if resp.status_code == 200 else None
        except (ValueError, KeyError, TypeError):
            ids = None
        if isinstance(ids, list) and len(ids) == n:
            return [int(t) for t in ids]
        return None


_TOKEN_ID = re.compile(r"token_id:(\d+)")


def _stable_hash(text: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


# ------------------------------------------------------------------------------ fairness
class FairLimiter:
    """A concurrency cap shared by many keys (trees), granted round-robin across keys.

    ``await acquire(key)`` waits for a slot; ``release()`` hands the slot to the next key in
    round-robin order that has a waiter, so every tree progresses at the same rate of grants
    however many requests it queues.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ConfigError(f"concurrency must be at least 1, got {capacity}")
        self.capacity = capacity
        self.free = capacity
        self._waiters: dict[Any, deque[asyncio.Future]] = {}
        self._order: deque[Any] = deque()
        self.in_use_peak = 0

    @property
    def in_use(self) -> int:
        """Slots held right now."""
        return self.capacity - self.free

    async def acquire(self, key: Any) -> None:
        """Wait for a slot for ``key``."""
        if self.free > 0 and not self._order:
            self.free -= 1
            self.in_use_peak = max(self.in_use_peak, self.in_use)
            return
        fut = asyncio.get_running_loop().create_future()
        q = self._waiters.get(key)
        if q is None:
            q = self._waiters[key] = deque()
            self._order.append(key)
        q.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted, then cancelled: give the slot on
                self.release()
            else:
                self._discard(key, fut)
            raise
        self.in_use_peak = max(self.in_use_peak, self.in_use)

    def release(self) -> None:
        """Return a slot: it goes to the next waiting key (round-robin), else back to the pool."""
        while self._order:
            key = self._order.popleft()
            q = self._waiters[key]
            while q and q[0].done():
                q.popleft()
            if not q:
                del self._waiters[key]
                continue
            fut = q.popleft()
            if q:
                self._order.append(key)
            else:
                del self._waiters[key]
            fut.set_result(None)
            return
        self.free += 1

    def _discard(self, key: Any, fut: asyncio.Future) -> None:
        q = self._waiters.get(key)
        if q is not None and fut in q:
            q.remove(fut)
            if not q:
                del self._waiters[key]
                self._order.remove(key)


# ------------------------------------------------------------------------------ the driver
@dataclass
class RolloutStats:
    """Counters of one :class:`RolloutDriver` run."""

    trees: int = 0
    nodes: int = 0
    calls: int = 0
    infra_errors: int = 0
    cancelled_requests: int = 0
    wall_s: float = 0.0
    peak_in_flight: int = 0
    errors: list[str] = field(default_factory=list)


def _plain(messages: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _no_open_children(tree: EpisodeTree, nid: str) -> bool:
    """True when every child of ``nid`` has ended (none can deliver to it any more)."""
    return all(tree.nodes[c].status.ended for c in tree.nodes[nid].children)


def _fail_node(engine: Any, node_id: str, error: str) -> None:
    """Mark a node ``infra_error`` (parent told, children cancelled, episode goes on)."""
    engine.fail(node_id, error)


@dataclass
class _TreeRun:
    """Per-tree state of a driver run: the engine, its fairness key, requests in flight."""

    engine: Any
    key: int
    base: dict[str, Any]
    pending: dict[str, asyncio.Task] = field(default_factory=dict)
    seqs: dict[str, list[int] | None] = field(default_factory=dict)


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
    ) -> None:
        self.raw_policy = policy
        self.policy = as_policy(policy)
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
        seeds = [int(s) for s in seeds]
        env_kwargs = dict(env_kwargs or {})
        make_engine(env_id, **env_kwargs)  # fail fast on a bad env id or kwargs
        jobs = [(self._keys + k, s, g) for k, (s, g) in enumerate((s, g) for s in seeds for g in range(group_size))]
        self._keys += len(jobs)
        t0 = time.perf_counter()
        if self.progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=len(jobs), unit="tree", desc=f"rollout {env_id}", dynamic_ncols=True)
        try:
            trees = await asyncio.gather(*(self._run_tree(k, env_id, s, g, env_kwargs) for k, s, g in jobs))
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

    async def _run_tree(self, key: int, env_id: str, seed: int, group: int, env_kwargs: dict[str, Any]) -> EpisodeTree:
        engine = make_engine(env_id, **env_kwargs)
        tree = engine.reset(seed)
        tree.tree_id = f"{env_id}:{seed}#g{group}"
        run = _TreeRun(engine, key, {"env_id": env_id, "seed": seed, "tree_id": tree.tree_id, "group": group})
        try:
            while not engine.done:
                await self._round(run)
        except Exception as exc:  # an engine or driver bug must not crash the batch: mask the tree
            if self.strict:
                raise
            msg = f"driver error: {type(exc).__name__}: {exc}"
            self.stats.errors.append(f"{tree.tree_id}: {msg}")
            _fail_node(engine, "0", msg)
        finally:
            for t in run.pending.values():
                t.cancel()
            await asyncio.gather(*run.pending.values(), return_exceptions=True)
        self.stats.trees += 1
        self.stats.nodes += len(tree.nodes)
        self.stats.infra_errors += sum(1 for n in tree.nodes.values() if n.status is NodeStatus.INFRA_ERROR)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(calls=self.stats.calls, infra=self.stats.infra_errors, refresh=False)
        return tree

    def _issue(self, run: _TreeRun, nid: str) -> None:
        """Observe ``nid`` now and send its request (the observation must already be final)."""
        engine = run.engine
        engine.observe(nid)  # commits pending feedback/results to the transcript
        node = engine.tree.nodes[nid]
        info: NodeInfo = {
            **run.base, "node": nid, "depth": node.depth, "goal": node.goal, "node_args": node.args,
            "steps_left": node.steps_left, "turn": node.steps_used,
        }
        if node.policy_version is None:
            node.policy_version = self._version()
        run.pending[nid] = asyncio.create_task(self._ask(run.key, _plain(node.transcript), info))

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
            if nid not in pending:
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
            except Exception as exc:  # a user policy's own error
                if self.strict:
                    raise
                res = exc
            if engine.done or node.status is not RUNNING:
                continue
            touched = [nid]
            if isinstance(res, BaseException):
                kind = "" if isinstance(res, PolicyError) else f"policy raised {type(res).__name__}: "
                _fail_node(engine, nid, f"{kind}{res}")
                touched.append(node.parent)
            else:
                self._record_prompt(node, res, run.seqs)
                out = engine.step(nid, res.text)
                self._record_completion(node, res, run.seqs)
                touched += out.spawned + [tree.nodes[e].parent for e in out.ended]
            for other in list(pending):  # cancel requests of nodes this action ended
                if engine.done or tree.nodes[other].status is not RUNNING:
                    pending.pop(other).cancel()
                    self.stats.cancelled_requests += 1
            if early and not engine.done:
                for c in dict.fromkeys(touched):
                    if c is not None and c not in pending and tree.nodes[c].status is RUNNING and _no_open_children(tree, c):
                        self._issue(run, c)

    @staticmethod
    def _record_prompt(node: Any, res: Completion, seqs: dict[str, list[int] | None]) -> None:
        """Store what this turn's prompt adds (endpoint prompt ids) on the message before the turn.

        ``seqs[node]`` holds the node's recorded prompt+completion ids so far, or None once a
        turn lacked ids or the template did not extend the conversation (then the node keeps
        no prompt ids at all, and rows render prompts with a tokenizer).
        """
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

    @staticmethod
    def _record_completion(node: Any, res: Completion, seqs: dict[str, list[int] | None]) -> None:
        msg = node.transcript[-1]
        if msg["role"] != "assistant":
            return
        if res.token_ids is not None:
            msg["token_ids"] = list(res.token_ids)
            if seqs.get(node.id) is not None:
                seqs[node.id] = seqs[node.id] + list(res.token_ids)
        elif seqs.get(node.id) is not None:
            seqs[node.id] = None
        if res.logprobs is not None:
            msg["logprobs"] = list(res.logprobs)


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
) -> list[EpisodeTree] | EpisodeTree:
    """Run ``group_size`` trees per seed of ``env_id`` against ``policy`` (module docstring).

    ``seeds`` an int returns one :class:`EpisodeTree` (with ``group_size=1``); an iterable
    returns a list, seed-major. ``concurrency`` caps requests in flight across all trees.
    ``strict=True`` re-raises policy and driver exceptions instead of masking the node.
    """
    driver = RolloutDriver(policy, concurrency=concurrency, policy_version=policy_version, progress=progress, strict=strict)
    if isinstance(seeds, int):
        trees = await driver.run(env_id, [seeds], group_size=group_size, env_kwargs=env_kwargs)
        return trees[0] if group_size == 1 else trees
    return await driver.run(env_id, seeds, group_size=group_size, env_kwargs=env_kwargs)


def run_rollout(env_id: str, policy: Any, seeds: int | Iterable[int], **kwargs: Any):
    """:func:`rollout` from synchronous code (``asyncio.run``)."""
    return asyncio.run(rollout(env_id, policy, seeds, **kwargs))


# ------------------------------------------------------------------------------ reference
def run_sync(engine: Any, policy: Callable[[Any, dict[str, Any]], str], seed: int | None = None) -> EpisodeTree:
    """The in-process reference: the driver's rounds with a synchronous ``(obs, info)`` policy.

    Each round asks ``policy`` for every runnable node (observations taken before any is
    applied), then applies the actions in slot order. Same seed and policy → the same tree
    as :func:`rollout` with :class:`OraclePolicy` or a server answering from that policy.
    """
    tree = engine.reset(seed)
    while not engine.done:
        ids = engine.runnable()
        actions = []
        for nid in ids:
            text = engine.observe(nid)
            node = tree.nodes[nid]
            info = {"node": nid, "depth": node.depth, "goal": node.goal, "node_args": node.args,
                    "steps_left": node.steps_left, "turn": node.steps_used}
            actions.append((nid, policy({"text": text, "node": nid, "depth": node.depth}, info)))
        for nid, action in actions:
            if engine.done:
                break
            if tree.nodes[nid].status is RUNNING:
                engine.step(nid, action)
    return tree


def strip_tokens(tree: EpisodeTree) -> EpisodeTree:
    """A copy of ``tree`` without recorded token ids/logprobs, tree id and policy versions (for comparisons)."""
    t = tree.model_copy(deep=True)
    t.tree_id = None
    for node in t.nodes.values():
        node.policy_version = None
        for m in node.transcript:
            m.pop("token_ids", None)
            m.pop("logprobs", None)
    return t


def load_trees(path: str) -> list[EpisodeTree]:
    """Trees from a JSONL file (one :meth:`EpisodeTree.to_json` per line)."""
    with open(path, encoding="utf-8") as fh:
        return [EpisodeTree.from_json(line) for line in fh if line.strip()]


def save_trees(trees: Sequence[EpisodeTree], path: str) -> None:
    """Write trees as JSONL (one tree per line)."""
    with open(path, "w", encoding="utf-8") as fh:
        for t in trees:
            fh.write(t.to_json() + "\n")
