"""TRL adapter: train one shared policy on every node of RAO episode trees, with per-node advantages in the loss.

Pinned and tested with **TRL 1.16.0** (``pip install "rao_envs[trl]"``; transformers 5.24,
torch 2.13). TRL is imported here and nowhere in the core. Four ways in, from most to least RAO:

* :class:`RAOTreeTrainer` — a ``GRPOTrainer`` subclass; **every node** of every tree is trained
  with its own RAO advantage and depth weight. The mechanism: TRL's sync ``rollout_func`` must
  return exactly one row per prompt copy, so whole trees do not fit it; the trainer overrides
  ``GRPOTrainer._generate_and_score_completions`` (TRL's generation-and-scoring step) instead.
  Each prompt copy of TRL's batch is one task seed; the copies of a seed (``group_size`` =
  ``num_generations``) are the G trees of the task. The step runs every tree in rounds with the
  trainer's own model (or its vLLM backend), assigns credit with :func:`rao_envs.credit.assign_credit`
  over the whole batch (gathered across processes), and returns a **variable number of rows**
  (one per node, or per turn) in TRL's own batch format. TRL's loss, clipping, KL, logging and
  optimizer then run unchanged. A row's ``advantages`` entry is ``A · w`` (its node's advantage
  times its depth weight: for a positive weight this equals weighting the row's loss by ``w``
  under every TRL loss type), its ``tool_mask`` covers only the node's own assistant tokens,
  and its ``sampling_per_token_logps`` are the logprobs the tokens were sampled with.
* :class:`RootRolloutFunc` — a ``rollout_func`` for the stock ``GRPOTrainer``, **root only**:
  each prompt copy runs a whole tree, but the row is the root's turns (``env_mask`` over
  environment text) with the root's reward (:func:`root_reward`); children act but are not trained.
* :func:`tool_environment` — an ``environment_factory`` class for TRL's built-in tool loop,
  for models that already speak tool calls (root only, too); ``delegate`` runs the child's own
  episode with the trainer's generation backend.
* :class:`RAORolloutWorker` — TRL's ``RolloutWorkerProtocol`` for ``AsyncGRPOTrainer``: runs
  trees against any OpenAI-compatible endpoint through :mod:`rao_envs.rollout` and pushes one
  ``RolloutSample`` per node (or per turn) with its own advantage, ``group_id`` and model version.

Tokens. A node's prompt for each turn is its previous prompt plus the tokens it sampled plus
the chat template's rendering of the new messages only (:class:`ChatTokens`), so the tokens a
row trains on are exactly the tokens the model saw and wrote (no re-tokenisation drift); the
engine records them on the transcript and :mod:`rao_envs.rows` turns them into rows.

Sampling logprobs from the trainer's model are ``log_softmax(logits / temperature)`` of the
sampled tokens, the quantity TRL's loss recomputes (no top-k/top-p renormalisation on either
side); from vLLM they are vLLM's own. ``GRPOConfig`` defaults to ``bf16=True``: the loss's
forward then runs under bf16 autocast while the trainer's model generates in its own dtype, so
the two logprobs differ (by up to ~0.1 nats for SmolLM2-135M on CPU); on CPU pass ``bf16=False``.
``mask_truncated_completions`` does not apply to tree rows.

Tested on CPU: the fast lane with a tiny local model, the slow lane with SmolLM2-135M-Instruct
and llama.cpp's server. Not run here (no GPU, no vLLM): :class:`VLLMGenerator`, several
processes (trees gathered for credit, rounds kept in step), and a full ``AsyncGRPOTrainer``
run, which needs a vLLM server (the worker is tested standalone).

TRL 1.16 behaviour worked around here (check these when moving the pin):

* ``rollout_func`` receives the prompts already repeated ``num_generations`` times and must
  return exactly that many rows; it never sees the dataset row, so :class:`RootRolloutFunc`
  maps a prompt back to its seed by its text (build the dataset with :meth:`RootRolloutFunc.dataset`).
* ``split_tensor_dict`` cuts the generation batch into ``steps_per_generation`` equal chunks
  and silently drops the remainder: the tree trainer pads its variable rows to a multiple with
  rows whose loss mask is 0 (no effect on the default ``dapo``, nor ``bnpo``/``cispo``; they
  slightly dilute the per-sequence mean of ``grpo``/``luspo``).
* ``GRPOTrainer`` advantages are per row (``(B,)``) and there is no loss-weight field, so the
  depth weight is folded into the advantage (``A · w``); the KL term (``beta``) is not weighted.
* The vLLM backend (``VLLMGeneration.generate``) de-duplicates prompts by ``num_generations``
  and, in server mode, slices results per process by equal counts: the trees call it with
  ``num_generations=1`` and pad every process's batch to the same size.
* ``environment_factory`` turns every public method into a tool and needs Google-style
  docstrings with type hints: :func:`tool_environment` generates them from the task's tools.
* With tools, TRL swaps in a prefix-preserving training chat template (``trainer.chat_template``,
  e.g. for Qwen3, whose own template is not prefix-preserving): token building uses it too.
* ``AsyncGRPOTrainer``'s ``RolloutSample`` carries one advantage and no loss weight: the
  worker pushes ``A · w`` and keeps the raw values in ``metrics`` (``rao/advantage``, ``rao/weight``).
* transformers marks a GGUF-loaded model quantized although its weights are de-quantized, and
  ``Trainer`` then refuses it: :func:`gguf_model_and_tokenizer` clears the marker.
* TRL's "experimental" warnings are silenced with ``TRL_EXPERIMENTAL_SILENCE=1`` (set here
  unless already set).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import itertools
import json
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from rao_envs.adapters.sft import episode_stats  # noqa: E402
from rao_envs.credit import METHODS, Credit, assign_credit, credit_summary  # noqa: E402
from rao_envs.errors import ConfigError  # noqa: E402
from rao_envs.policies.base import Completion  # noqa: E402
from rao_envs.registration import engine_factory, task_spec  # noqa: E402
from rao_envs.rows import node_rows, tree_rows  # noqa: E402
from rao_envs.seeding import check_seed  # noqa: E402
from rao_envs.task import delegate_params  # noqa: E402
from rao_envs.types import Action, EpisodeTree, NodeStatus  # noqa: E402

TRL_VERSION = "1.16.0"
"""The TRL version this adapter is tested with (the ``trl`` extra pins it)."""

RUNNING, WAITING = NodeStatus.RUNNING, NodeStatus.WAITING
Mode = Literal["node", "turn"]


def _check_trl() -> None:
    import trl

    if trl.__version__ != TRL_VERSION:
        import warnings

        warnings.warn(
            f"rao_envs.adapters.trl is tested with trl=={TRL_VERSION}; found {trl.__version__} "
            f'(pip install "trl=={TRL_VERSION}")', stacklevel=3,
        )


_check_trl()


# ============================================================================ tokens
def _as_ids(out: Any) -> list[int]:
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    if hasattr(out, "tolist"):
        out = out.tolist()
    if out and isinstance(out[0], list):
        out = out[0]
    return [int(t) for t in out]


class ChatTokens:
    """Prompt token ids for each node's next turn, built so every turn extends the node's earlier tokens exactly.

    The first turn renders the chat with ``apply_chat_template(..., add_generation_prompt=True)``.
    Later turns are the previous prompt, the sampled completion, and the rendering of the new
    messages alone, found as TRL's tool loop does: render a dummy exchange with and without
    them and keep the difference after the dummy's last end-of-turn token. ``chat_template``
    overrides the tokenizer's (pass the trainer's: TRL swaps in a prefix-preserving training
    template for some models, e.g. Qwen3 with tools).
    """

    _DUMMY = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "x"}]

    def __init__(
        self,
        tokenizer: Any,
        *,
        eos_token_ids: Sequence[int] | None = None,
        tools: list[Any] | None = None,
        chat_template: str | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.eos_token_ids = list(eos_token_ids) if eos_token_ids else [tokenizer.eos_token_id]
        self.kwargs = dict(chat_template_kwargs or {})
        if tools:
            self.kwargs["tools"] = tools
        if chat_template:
            self.kwargs["chat_template"] = chat_template
        self._state: dict[Hashable, tuple[list[int], int]] = {}
        self._prefix: list[int] | None = None

    def render(self, messages: list[dict[str, str]], generation_prompt: bool) -> list[int]:
        """Token ids of ``messages`` rendered by the chat template."""
        out = self.tokenizer.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=generation_prompt, return_dict=False, **self.kwargs
        )
        return _as_ids(out)

    def suffix(self, messages: list[dict[str, str]]) -> list[int]:
        """What the template adds after an assistant turn's end token for ``messages`` plus the generation prompt."""
        if self._prefix is None:
            prefix = self.render(self._DUMMY, False)
            ends = [i for i, t in enumerate(prefix) if t in self.eos_token_ids]
            self._prefix = prefix[: ends[-1] + 1] if ends else prefix
        full = self.render(self._DUMMY + list(messages), True)
        if full[: len(self._prefix)] != self._prefix:
            raise ConfigError(
                "the chat template does not render a conversation as a prefix of its continuation; "
                "use a prefix-preserving template (TRL's *_training.jinja templates are)"
            )
        return full[len(self._prefix):]

    def prompt(self, key: Hashable, messages: list[dict[str, str]]) -> list[int]:
        """The prompt ids of the next turn of node ``key`` whose chat so far is ``messages``."""
        state = self._state.get(key)
        if state is None:
            return self.render(messages, True)
        ids, used = state
        return ids + self.suffix(messages[used:])

    def record(self, key: Hashable, prompt_ids: list[int], completion_ids: list[int], n_messages: int) -> None:
        """Remember node ``key``'s tokens after a turn (``n_messages``: its chat length with the new assistant turn)."""
        self._state[key] = (list(prompt_ids) + list(completion_ids), n_messages)

    def forget(self) -> None:
        """Drop every node's remembered tokens (between batches)."""
        self._state.clear()


# ============================================================================ generation backends
@dataclass
class Request:
    """One turn to generate: the node's prompt ids, its chat, and its :class:`~rao_envs.policies.NodeInfo`."""

    prompt_ids: list[int]
    messages: list[dict[str, str]]
    info: dict[str, Any]


@dataclass
class Generated:
    """A generated turn: its token ids (end token included when sampled), their logprobs, optionally the text."""

    token_ids: list[int]
    logprobs: list[float] | None = None
    text: str | None = None


Generator = Callable[[list[Request]], list[Generated]]
"""A generation backend: one :class:`Generated` per :class:`Request`, in order."""


def _cut_at_eos(ids: list[int], eos: set[int]) -> list[int]:
    for i, t in enumerate(ids):
        if t in eos:
            return ids[: i + 1]
    return ids


#: the keyword ``generate`` takes a precomputed KV cache under (renamed in transformers 5)
_CACHE_KWARG = "cache" if int(transformers.__version__.split(".")[0]) >= 5 else "past_key_values"


class HFGenerator:
    """Batched ``model.generate`` with the sampled tokens' logprobs (``log_softmax(logits / temperature)``).

    ``HFGenerator.for_trainer(trainer)`` uses the trainer's model, generation config and
    unwrapping (DeepSpeed/FSDP) exactly as TRL's own generation path does; the plain
    constructor serves any model (evaluation, tests). ``share_prefix=k`` (off by default): when
    every prompt of a batch starts with the same ``k`` or more tokens (the system prompt), that
    prefix goes through the model once and its KV cache is repeated for each row (the rest of
    each row is padded after it), which removes most of the prefill on long shared prompts.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        do_sample: bool = True,
        eos_token_ids: Sequence[int] | None = None,
        batch_size: int | None = None,
        generation_config: Any = None,
        trainer: GRPOTrainer | None = None,
        share_prefix: int = 0,
    ) -> None:
        from transformers import GenerationConfig

        self.model, self.tokenizer, self.trainer = model, tokenizer, trainer
        self.share_prefix = share_prefix
        self.eos = list(eos_token_ids) if eos_token_ids else [tokenizer.eos_token_id]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos[0]
        self.temperature = temperature if do_sample else 1.0
        self.batch_size = batch_size
        config = copy.deepcopy(generation_config) if generation_config is not None else GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature if do_sample else None,
            top_k=0 if do_sample else None, top_p=1.0 if do_sample else None,
            pad_token_id=self.pad_id, eos_token_id=self.eos,
        )
        config.return_dict_in_generate, config.output_logits = True, True  # the sampled tokens' logits, for their logprobs
        self.generation_config = config

    @classmethod
    def for_trainer(cls, trainer: GRPOTrainer, batch_size: int | None = None) -> HFGenerator:
        """The trainer's own model and generation settings (``max_completion_length`` tokens per turn)."""
        return cls(trainer.model, trainer._tokenizer, temperature=trainer.temperature, eos_token_ids=trainer.eos_token_ids,
                   batch_size=batch_size, generation_config=trainer.generation_config, trainer=trainer)

    @contextlib.contextmanager
    def _unwrapped(self):
        t = self.trainer
        if t is None:
            was_training = self.model.training
            self.model.eval()
            try:
                with torch.no_grad():
                    yield self.model
            finally:
                self.model.train(was_training)
            return
        from trl.models import unwrap_model_for_generation

        with (
            unwrap_model_for_generation(
                t.model_wrapped, t.accelerator, gather_deepspeed3_params=t.args.ds3_gather_for_generation,
                generation_kwargs=t.generation_kwargs, gradient_checkpointing_kwargs=t.args.gradient_checkpointing_kwargs,
            ) as model,
            torch.no_grad(),
            t._dist.summon_full_params(t.model_wrapped, recurse=False),
        ):
            yield model

    def __call__(self, requests: list[Request]) -> list[Generated]:
        """Generate one turn per request (left-padded batches; each completion cut after its first end token)."""
        if not requests:
            return []
        eos = set(self.eos)
        out: list[Generated] = []
        step = self.batch_size or len(requests)
        with self._unwrapped() as model:
            device = next(model.parameters()).device
            for start in range(0, len(requests), step):
                chunk = [r.prompt_ids for r in requests[start: start + step]]
                shared = _common_prefix(chunk) if self.share_prefix and len(chunk) > 1 else 0
                shared = shared if shared >= self.share_prefix else 0
                width = max(len(p) for p in chunk) - shared  # the rows after the shared prefix, left-padded
                ids = torch.full((len(chunk), shared + width), self.pad_id, dtype=torch.long)
                attn = torch.zeros_like(ids)
                for i, p in enumerate(chunk):
                    ids[i, :shared] = torch.tensor(p[:shared], dtype=torch.long)
                    attn[i, :shared] = 1
                    ids[i, shared + width - (len(p) - shared):] = torch.tensor(p[shared:], dtype=torch.long)
                    attn[i, shared + width - (len(p) - shared):] = 1
                extra = {}
                if shared:  # one forward pass over the prefix every row shares, its cache repeated per row
                    out_prefix = model(input_ids=ids[:1, :shared].to(device), use_cache=True)
                    cache = out_prefix.cache if _CACHE_KWARG == "cache" else out_prefix.past_key_values
                    cache.batch_repeat_interleave(len(chunk))
                    extra[_CACHE_KWARG] = cache
                res = model.generate(
                    input_ids=ids.to(device), attention_mask=attn.to(device), generation_config=self.generation_config,
                    **extra,
                )
                seqs = res.sequences[:, shared + width:]
                lps = torch.stack([
                    torch.log_softmax(logits.float() / self.temperature, dim=-1).gather(-1, seqs[:, t: t + 1]).squeeze(-1)
                    for t, logits in enumerate(res.logits)
                ], dim=1) if res.logits else torch.zeros_like(seqs, dtype=torch.float)
                for row, lp in zip(seqs.tolist(), lps.tolist()):
                    kept = _cut_at_eos(row, eos)
                    out.append(Generated(kept, lp[: len(kept)]))
        return out


class VLLMGenerator:
    """The trainer's vLLM backend (``use_vllm=True``, server or colocate mode): prompt ids in, ids and logprobs out.

    Weights are synced when the training step changed (as TRL does); with several processes,
    every process's batch is padded to the same size, since the server slices results by it.
    Written against TRL 1.16's ``VLLMGeneration.generate``; needs vLLM and a GPU to run.
    """

    def __init__(self, trainer: GRPOTrainer) -> None:
        self.trainer = trainer

    def __call__(self, requests: list[Request]) -> list[Generated]:
        """Generate one turn per request with ``vllm_generation.generate(..., num_generations=1)``."""
        t = self.trainer
        if t.state.global_step != t._last_loaded_step:
            t.vllm_generation.sync_weights()
            t._last_loaded_step = t.state.global_step
        prompts = [r.prompt_ids for r in requests]
        n = len(prompts)
        if t.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            most = max(gather_object([n]))
            prompts = prompts + [[t._tokenizer.pad_token_id]] * (most - n)
        if not prompts:
            return []
        _, completion_ids, logprobs, _ = t.vllm_generation.generate(prompts=prompts, images=None, num_generations=1)
        out = []
        for i in range(n):
            lp = [x[0] for x in logprobs[i]] if logprobs is not None else None
            out.append(Generated(list(completion_ids[i]), lp))
        return out


def generator_for(trainer: GRPOTrainer) -> Generator:
    """The trainer's own generation backend: :class:`VLLMGenerator` with ``use_vllm``, else :class:`HFGenerator`."""
    return VLLMGenerator(trainer) if getattr(trainer, "use_vllm", False) else HFGenerator.for_trainer(trainer)


# ============================================================================ running trees
class TreeSampler:
    """Runs episode trees in rounds, generating the turns of every runnable node of every tree as one batch.

    The same rounds as :func:`rao_envs.rollout.run_sync` and the async driver: each round asks
    every runnable node (observations committed before any answer is applied), then applies
    the answers in slot order; so the trees are those the driver would produce. Each answer
    goes to the engine as a :class:`~rao_envs.policies.Completion` with its prompt ids, token
    ids and logprobs, which the engine records on the transcript. ``max_prompt_length``: a node
    whose prompt grows past it is marked ``infra_error`` (masked out of training).
    ``sync(live) -> any_live`` keeps several processes in the same round (each must call the
    backend equally often); ``policy_version() -> int | None`` labels each node with the version that first acted in it.
    """

    def __init__(
        self,
        env_id: str,
        generate: Generator,
        chat: ChatTokens,
        *,
        env_kwargs: dict[str, Any] | None = None,
        max_prompt_length: int | None = None,
        policy_version: Callable[[], int | None] | None = None,
        sync: Callable[[bool], bool] | None = None,
    ) -> None:
        self.env_id = task_spec(env_id).id
        self.env_kwargs = dict(env_kwargs or {})
        self.factory = engine_factory(self.env_id, **self.env_kwargs)
        self.generate, self.chat = generate, chat
        self.max_prompt_length = max_prompt_length
        self.policy_version = policy_version
        self.sync = sync
        self.protocol = self.factory().protocol
        self.stats: dict[str, float] = {"rounds": 0, "turns": 0, "prompt_tokens": 0, "completion_tokens": 0, "overflows": 0}

    def decode(self, ids: list[int]) -> str:
        """The text of a completion (its end tokens removed, other special tokens kept: tool-call tags)."""
        eos = set(self.chat.eos_token_ids)
        return self.chat.tokenizer.decode([t for t in ids if t not in eos], skip_special_tokens=False)

    def run(self, seeds: Sequence[int], tree_ids: Sequence[str] | None = None) -> list[EpisodeTree]:
        """One tree per seed (seeds may repeat: each copy is its own tree); returns them in order."""
        engines = [self.factory() for _ in seeds]
        for k, (engine, seed) in enumerate(zip(engines, seeds)):
            tree = engine.reset(check_seed(int(seed)))
            tree.tree_id = tree_ids[k] if tree_ids else f"{self.env_id}:{seed}#{k}"
        self.chat.forget()
        while True:
            batch = self._requests(engines)
            live = bool(batch)
            if self.sync is not None:
                live = self.sync(live)
            if not live:
                break
            outs = self.generate([r for _, _, r in batch])
            self.stats["rounds"] += 1
            for (k, nid, req), gen in zip(batch, outs):
                engine = engines[k]
                if engine.done or engine.tree.nodes[nid].status is not RUNNING:
                    continue  # ended earlier in this round (a parent finished, a sibling failed the tree)
                text = gen.text if gen.text is not None else self.decode(gen.token_ids)
                self.chat.record((k, nid), req.prompt_ids, gen.token_ids, len(req.messages) + 1)
                self.stats["turns"] += 1
                self.stats["completion_tokens"] += len(gen.token_ids)
                engine.step(nid, Completion(text, list(gen.token_ids), gen.logprobs, list(req.prompt_ids)))
        self.chat.forget()
        return [e.tree for e in engines]

    def _requests(self, engines: list[Any]) -> list[tuple[int, str, Request]]:
        batch = []
        for k, engine in enumerate(engines):
            if engine.done:
                continue
            ids = engine.runnable()
            if not ids:
                raise RuntimeError("the tree is not done but no node can act (engine bug)")
            tree = engine.tree
            for nid in ids:
                if engine.done or tree.nodes[nid].status is not RUNNING:
                    continue
                messages = [{"role": m["role"], "content": m["content"]} for m in engine.commit(nid)]
                node = tree.nodes[nid]
                if node.policy_version is None and self.policy_version is not None:
                    node.policy_version = self.policy_version()
                prompt = self.chat.prompt((k, nid), messages)
                if self.max_prompt_length is not None and len(prompt) > self.max_prompt_length:
                    self.stats["overflows"] += 1
                    engine.fail(nid, f"prompt of {len(prompt)} tokens exceeds max_prompt_length={self.max_prompt_length}")
                    continue
                info = {**engine.node_info(nid), "env_id": tree.env_id, "seed": tree.seed, "tree_id": tree.tree_id, "group": k}
                self.stats["prompt_tokens"] += len(prompt)
                batch.append((k, nid, Request(prompt, messages, info)))
        return batch


def task_dataset(env_id: str, seeds: Iterable[int]):
    """A ``datasets.Dataset`` of task seeds for :class:`RAOTreeTrainer`: ``prompt`` (a placeholder naming the task) and ``seed``."""
    from datasets import Dataset

    env_id = task_spec(env_id).id
    seeds = [check_seed(int(s)) for s in seeds]
    return Dataset.from_dict({
        "prompt": [[{"role": "user", "content": f"{env_id} seed {s}"}] for s in seeds],
        "seed": seeds,
    })


def _common_prefix(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix every row shares, leaving each row at least one token of its own."""
    first, n = rows[0], min(len(r) for r in rows) - 1
    for k in range(max(n, 0)):
        t = first[k]
        if any(r[k] != t for r in rows):
            return k
    return max(n, 0)


def evaluate(
    model: Any,
    tokenizer: Any,
    env_id: str,
    seeds: Iterable[int],
    *,
    env_kwargs: dict[str, Any] | None = None,
    max_new_tokens: int = 64,
    greedy: bool = True,
    temperature: float = 1.0,
    batch_size: int | None = None,
    protocol: str = "tool",
    share_prefix: int = 32,
) -> dict[str, float]:
    """Run one tree per seed with ``model`` and return :func:`rao_envs.adapters.sft.episode_stats` (valid actions, root success).

    ``share_prefix``: a batch whose prompts share at least this many leading tokens (the system
    prompt) runs them through the model once (:class:`HFGenerator`); 0 turns it off.
    """
    gen = HFGenerator(model, tokenizer, max_new_tokens=max_new_tokens, temperature=temperature, do_sample=not greedy,
                      batch_size=batch_size, share_prefix=share_prefix)
    sampler = TreeSampler(env_id, gen, ChatTokens(tokenizer, eos_token_ids=gen.eos), env_kwargs=env_kwargs)
    trees = sampler.run(list(seeds))
    return episode_stats(trees, protocol)


# ============================================================================ the tree trainer
def _pad(seqs: list[list[Any]], value: Any, side: str, dtype: torch.dtype, device: Any) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=dtype)
    for i, s in enumerate(seqs):
        if s:
            t = torch.tensor(s, dtype=dtype)
            if side == "left":
                out[i, width - len(s):] = t
            else:
                out[i, : len(s)] = t
    return out.to(device)


def task_verifier(completions: list[Any], **kwargs: Any) -> list[float]:
    """The tree trainer's reward source as TRL sees it: never called (nodes are scored by the task's verifier)."""
    raise RuntimeError("RAOTreeTrainer scores nodes with the task's verifier; this function is only its name in TRL")


class RAOTreeTrainer(GRPOTrainer):
    """GRPO on every node of RAO episode trees: per-node advantages and depth weights in TRL's loss.

    ``RAOTreeTrainer(model, "TextCraft-v0", args=GRPOConfig(...), group_size=8, credit="rao",
    lam=0.0, env_kwargs={"difficulty": "easy", "max_depth": 2})``, then ``trainer.train()``.

    * ``env_id`` — any registered task; ``env_kwargs`` — its ``make`` kwargs (difficulty, the
      limits ``max_depth``, ``max_steps_per_node``, ``max_nodes``, …, ``protocol``).
    * ``credit`` — a method of :mod:`rao_envs.credit` (``rao``, ``root``, ``depth_grpo``,
      ``sibling``); ``lam`` — λ of the local reward; ``credit_kwargs`` — more
      :func:`~rao_envs.credit.assign_credit` options (``drop_no_signal``, ``depth_weighting``, ``std_normalize``).
    * ``group_size`` — G trees per task (sets ``args.num_generations``); ``mode`` — ``"node"``
      (one row per node: its turns prefix-merged, environment tokens masked) or ``"turn"``.
    * ``seeds`` or ``train_dataset`` — the tasks (a dataset needs a ``seed`` column;
      :func:`task_dataset` builds one); ``generator`` — a custom :data:`Generator` (default:
      the trainer's own model or vLLM); ``max_prompt_length`` — longest prompt of a turn.

    ``args.max_completion_length`` is the token limit of one turn. After each generation step
    ``last_trees``, ``last_credit`` and ``last_rows`` hold this process's trees, the batch's
    credit and the rows handed to the loss. How the rows reach TRL: module docstring.
    """

    def __init__(
        self,
        model: Any,
        env_id: str,
        *,
        args: GRPOConfig | None = None,
        env_kwargs: dict[str, Any] | None = None,
        credit: str = "rao",
        lam: float | None = None,
        group_size: int | None = None,
        mode: Mode = "node",
        credit_kwargs: dict[str, Any] | None = None,
        seeds: Iterable[int] | None = None,
        train_dataset: Any = None,
        processing_class: Any = None,
        generator: Generator | None = None,
        max_prompt_length: int | None = None,
        **kwargs: Any,
    ) -> None:
        if credit not in METHODS:
            raise ConfigError(f"unknown credit method {credit!r}; choose one of {list(METHODS)}")
        if mode not in ("node", "turn"):
            raise ConfigError(f"mode must be 'node' or 'turn', got {mode!r}")
        for bad in ("reward_funcs", "rollout_func", "environment_factory", "tools"):
            if kwargs.get(bad) is not None:
                raise ConfigError(
                    f"RAOTreeTrainer takes no {bad}: rewards are the task's verifiers and the trees are its rollouts "
                    "(use GRPOTrainer with RootRolloutFunc or tool_environment for those hooks)"
                )
        self.env_id = task_spec(env_id).id
        self.env_kwargs = dict(env_kwargs or {})
        engine_factory(self.env_id, **self.env_kwargs)  # bad ids and kwargs fail here, with the fix
        self.credit_method, self.lam, self.row_mode = credit, lam, mode
        self.credit_kwargs = dict(credit_kwargs or {})
        if args is None:
            args = GRPOConfig(output_dir="rao-tree-grpo", report_to="none")
        if group_size is not None:
            if group_size < 2:
                raise ConfigError(f"group_size must be at least 2 (the leave-one-out baseline), got {group_size}")
            args.num_generations = group_size
        if args.generation_batch_size % args.num_generations:
            raise ConfigError(
                f"the generation batch ({args.generation_batch_size} prompt copies) must hold whole groups of "
                f"group_size={args.num_generations} trees: set per_device_train_batch_size to a multiple of it"
            )
        if train_dataset is None:
            train_dataset = task_dataset(self.env_id, seeds if seeds is not None else range(100_000))
        elif "seed" not in train_dataset.column_names:
            raise ConfigError("train_dataset needs a 'seed' column (one task seed per row); build it with task_dataset()")
        # TRL requires a reward source; the tree trainer scores nodes with the task's verifiers instead
        super().__init__(model=model, reward_funcs=[task_verifier], args=args, train_dataset=train_dataset,
                         processing_class=processing_class, **kwargs)
        self.chat = ChatTokens(self._tokenizer, eos_token_ids=self.eos_token_ids, chat_template=self.chat_template,
                               chat_template_kwargs=self.chat_template_kwargs)
        self.generator = generator or generator_for(self)
        self.sampler = TreeSampler(
            self.env_id, self.generator, self.chat, env_kwargs=self.env_kwargs, max_prompt_length=max_prompt_length,
            policy_version=lambda: self.state.global_step,
            sync=self._any_live if self.accelerator.num_processes > 1 else None,
        )
        self.last_trees: list[EpisodeTree] = []
        self.last_credit: Credit | None = None
        self.last_rows: list[dict[str, Any]] = []

    def _any_live(self, live: bool) -> bool:
        flag = torch.tensor([int(live)], device=self.accelerator.device)
        return bool(self.accelerator.gather(flag).sum().item())

    def _gather_trees(self, trees: list[EpisodeTree]) -> tuple[list[EpisodeTree], int]:
        """Every process's trees (credit needs all G trees of a task) and this process's offset among them."""
        if self.accelerator.num_processes == 1:
            return trees, 0
        from accelerate.utils import gather_object

        counts = gather_object([len(trees)])
        everything = gather_object(trees)
        return everything, sum(counts[: self.accelerator.process_index])

    def _rows(self, trees: list[EpisodeTree], credit: Credit, offset: int) -> list[dict[str, Any]]:
        rows = []
        for i, tree in enumerate(trees):
            for r in tree_rows(tree, self._tokenizer, mode=self.row_mode, credit=credit, tree_index=offset + i):
                r["tree_index"] = offset + i
                rows.append(r)
        return rows

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """Run a tree per prompt copy, assign RAO credit over the batch, return one TRL row per node (or turn)."""
        device = self.accelerator.device
        mode = "train" if self.model.training else "eval"
        try:
            seeds = [int(x["seed"]) for x in inputs]
        except KeyError:
            raise ConfigError("every dataset row needs a 'seed' (build the dataset with task_dataset())") from None
        rank = self.accelerator.process_index
        tree_ids = [f"{self.env_id}:{s}#s{self.state.global_step}.p{rank}.{k}" for k, s in enumerate(seeds)]
        trees = self.sampler.run(seeds, tree_ids)
        everything, offset = self._gather_trees(trees)
        credit = assign_credit(everything, self.credit_method, lam=self.lam, **self.credit_kwargs)
        rows = self._rows(trees, credit, offset)
        self.last_trees, self.last_credit, self.last_rows = trees, credit, rows
        self._log_trees(mode, everything, credit, len(rows))

        # TRL splits the batch into steps_per_generation equal chunks and drops the rest: pad with mask-0 rows
        chunks = self.args.steps_per_generation if mode == "train" else 1
        total = max(chunks, -(-len(rows) // chunks) * chunks)
        pad_id, eos_id = self._tokenizer.pad_token_id, self.eos_token_ids[0]
        filler = {"prompt_ids": [pad_id], "completion_ids": [eos_id], "loss_mask": [0], "logprobs": [None],
                  "advantage": 0.0, "weight": 0.0, "tree_index": -1, "node_id": "", "turn": -2, "depth": -1}
        rows = rows + [dict(filler) for _ in range(total - len(rows))]

        prompt_ids = _pad([r["prompt_ids"] for r in rows], pad_id, "left", torch.long, device)
        prompt_mask = _pad([[1] * len(r["prompt_ids"]) for r in rows], 0, "left", torch.long, device)
        completion_ids = _pad([r["completion_ids"] for r in rows], pad_id, "right", torch.long, device)
        completion_mask = _pad([[1] * len(r["completion_ids"]) for r in rows], 0, "right", torch.long, device)
        tool_mask = _pad([r["loss_mask"] for r in rows], 1, "right", torch.long, device)
        sampling = _pad([[(float("nan") if m else 0.0) if lp is None else float(lp) for lp, m in zip(r["logprobs"], r["loss_mask"])]
                         for r in rows], 0.0, "right", torch.float32, device)
        adv = torch.tensor([float(r["advantage"] or 0.0) for r in rows], dtype=torch.float32, device=device)
        weight = torch.tensor([float(r["weight"] if r["weight"] is not None else 1.0) for r in rows], dtype=torch.float32, device=device)
        loss_mask = completion_mask * tool_mask
        num_items = self.accelerator.gather(loss_mask.sum()).sum()

        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention = torch.cat([prompt_mask, completion_mask], dim=1)
        keep = completion_ids.size(1)
        batch = self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
        old_logps = ref_logps = is_ratio = None
        generate_every = self.args.steps_per_generation * self.num_iterations
        use_is = bool(self.use_vllm and self.vllm_importance_sampling_correction)
        from trl.models.utils import disable_gradient_checkpointing

        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            if self.args.gradient_accumulation_steps % generate_every != 0 or use_is:
                old_logps, _, _ = self._get_per_token_logps_and_entropies(self.model, input_ids, attention, keep, batch_size=batch)
            if use_is:
                is_ratio = self._importance_ratio(old_logps, sampling, loss_mask)
            if self.beta != 0.0:
                ref_logps = self._reference_logps(input_ids, attention, keep, batch)

        n_tokens = int(attention.sum().item())
        if mode == "train":
            self.state.num_input_tokens_seen += n_tokens
        self._metrics[mode]["num_tokens"] = [self.state.num_input_tokens_seen]
        out: dict[str, Any] = {
            "prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": completion_mask, "tool_mask": tool_mask, "advantages": adv * weight,
            "num_items_in_batch": num_items, "sampling_per_token_logps": sampling,
            "rao_advantages": adv, "rao_weights": weight,
            "rao_keys": [(r["tree_index"], r["node_id"], r["turn"]) for r in rows],
        }
        if old_logps is not None:
            out["old_per_token_logps"] = old_logps
        if is_ratio is not None:
            out["importance_sampling_ratio"] = is_ratio
        if ref_logps is not None:
            out["ref_per_token_logps"] = ref_logps
        return out

    def _reference_logps(self, input_ids: torch.Tensor, attention: torch.Tensor, keep: int, batch: int) -> torch.Tensor:
        if self.ref_model is not None:
            return self._get_per_token_logps_and_entropies(self.ref_model, input_ids, attention, keep, batch_size=batch)[0]
        from trl.models.utils import use_adapter

        model = self.accelerator.unwrap_model(self.model)
        with use_adapter(model, adapter_name="ref" if "ref" in model.peft_config else None):
            return self._get_per_token_logps_and_entropies(self.model, input_ids, attention, keep, batch_size=batch)[0]

    def _importance_ratio(self, old: torch.Tensor, sampling: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """TRL's vLLM importance-sampling correction (same modes and clips as ``GRPOTrainer``)."""
        diff = torch.nan_to_num((old - sampling) * mask, nan=0.0)
        mode = self.vllm_importance_sampling_mode
        if mode in ("sequence_mask", "sequence_truncate"):
            diff = diff.sum(dim=-1, keepdim=True)
        ratio = torch.exp(diff)
        lo, hi = self.vllm_importance_sampling_clip_min, self.vllm_importance_sampling_clip_max
        if mode.endswith("truncate"):
            return torch.clamp(ratio, min=lo, max=hi)
        lo = -math.inf if lo is None else lo
        hi = math.inf if hi is None else hi
        return ratio.masked_fill((ratio < lo) | (ratio > hi), 0.0)

    def _log_trees(self, mode: str, trees: list[EpisodeTree], credit: Credit, n_rows: int) -> None:
        summary = credit_summary(credit)
        stats = episode_stats(trees, self.sampler.protocol)
        roots = [t.root.reward for t in trees if t.root.reward is not None]
        m = self._metrics[mode]
        m["rao/root_success"].append(stats["root_success"])
        m["rao/root_reward"].append(sum(roots) / len(roots) if roots else 0.0)
        m["rao/valid_action_rate"].append(stats["valid_action_rate"])
        m["rao/nodes_per_tree"].append(stats["nodes_per_tree"])
        m["rao/max_depth"].append(float(max((n.depth for t in trees for n in t.nodes.values()), default=0)))
        m["rao/rows"].append(float(n_rows))
        m["rao/trained_nodes"].append(float(summary["nodes"]))
        m["rao/groups_dropped"].append(float(summary["groups_dropped"]))
        m["rao/infra_errors"].append(float(sum(n.status is NodeStatus.INFRA_ERROR for t in trees for n in t.nodes.values())))
        m["reward"].append(m["rao/root_reward"][-1])


# ============================================================================ root-only rollout_func
def _prompt_key(prompt: list[dict[str, Any]]) -> str:
    return json.dumps([(m.get("role"), m.get("content")) for m in prompt], ensure_ascii=False)


class RootRolloutFunc:
    """A ``rollout_func`` for the stock ``GRPOTrainer`` — **root only**: only the root's turns are trained.

    Each prompt copy runs a whole tree with the trainer's model (children act, and their
    results reach the root, but children are not trained); its row is the root's turns, with
    ``env_mask`` 0 over environment text (tool output, child results) and the root's local
    reward as ``root_reward`` (pass :func:`root_reward` in ``reward_funcs``). TRL then computes
    its own group advantages over the copies (set ``scale_rewards="none"`` to match RAO's
    no-std baseline). For per-node advantages use :class:`RAOTreeTrainer`::

        from trl import GRPOConfig, GRPOTrainer
        from rao_envs.adapters.trl import RootRolloutFunc, root_reward

        model = ...  # any HF causal LM
        rollout = RootRolloutFunc("Toy-v0", env_kwargs={"difficulty": "easy"})
        GRPOTrainer(model, reward_funcs=[root_reward], train_dataset=rollout.dataset(range(512)),
                    rollout_func=rollout, args=GRPOConfig(...))

    The prompts come from :meth:`dataset` (each is its seed's root system and user message):
    TRL's ``rollout_func`` never sees dataset rows, so a prompt is mapped back to its seed by its text.
    """

    def __init__(self, env_id: str, *, env_kwargs: dict[str, Any] | None = None, max_prompt_length: int | None = None) -> None:
        self.env_id = task_spec(env_id).id
        self.env_kwargs = dict(env_kwargs or {})
        self.factory = engine_factory(self.env_id, **self.env_kwargs)
        self.max_prompt_length = max_prompt_length
        self._seeds: dict[str, int] = {}
        self._sampler: TreeSampler | None = None
        self._trainer: Any = None
        self.last_trees: list[EpisodeTree] = []

    def dataset(self, seeds: Iterable[int]):
        """The prompts of ``seeds`` (each root's system and first user message) as a ``datasets.Dataset``."""
        from datasets import Dataset

        prompts, kept = [], []
        for s in seeds:
            engine = self.factory()
            tree = engine.reset(check_seed(int(s)))
            prompt = [{"role": m["role"], "content": m["content"]} for m in tree.root.transcript[:2]]
            self._seeds.setdefault(_prompt_key(prompt), int(s))
            prompts.append(prompt)
            kept.append(int(s))
        return Dataset.from_dict({"prompt": prompts, "seed": kept})

    def _sampler_for(self, trainer: Any) -> TreeSampler:
        if self._sampler is None or self._trainer is not trainer:
            chat = ChatTokens(trainer.processing_class, eos_token_ids=trainer.eos_token_ids,
                              chat_template=getattr(trainer, "chat_template", None),
                              chat_template_kwargs=getattr(trainer, "chat_template_kwargs", None))
            self._sampler = TreeSampler(self.env_id, generator_for(trainer), chat, env_kwargs=self.env_kwargs,
                                        max_prompt_length=self.max_prompt_length,
                                        policy_version=lambda: trainer.state.global_step)
            self._trainer = trainer
        return self._sampler

    def __call__(self, prompts: list[list[dict[str, Any]]], trainer: Any) -> dict[str, list]:
        """One tree per prompt copy; one row per copy: the root's turns, ``env_mask``, logprobs and ``root_reward``."""
        try:
            seeds = [self._seeds[_prompt_key(p)] for p in prompts]
        except KeyError:
            raise ConfigError("a prompt did not come from RootRolloutFunc.dataset(); build the train dataset with it") from None
        sampler = self._sampler_for(trainer)
        trees = sampler.run(seeds)
        self.last_trees = trees
        eos = trainer.eos_token_ids[0]
        out: dict[str, list] = {k: [] for k in ("prompt_ids", "completion_ids", "logprobs", "env_mask", "root_reward",
                                               "root_score", "tree_nodes")}
        for tree in trees:
            root = tree.root
            rows = [] if root.status is NodeStatus.INFRA_ERROR else node_rows(tree, root, trainer.processing_class, mode="node")
            if rows:
                r = rows[0]
                prompt, comp, mask = r["prompt_ids"], r["completion_ids"], r["loss_mask"]
                lps = [(None if m else 0.0) if lp is None else lp for lp, m in zip(r["logprobs"], mask)]
            else:  # the root never acted (or failed): a row that trains nothing
                prompt = sampler.chat.render([{"role": m["role"], "content": m["content"]} for m in root.transcript[:2]], True)
                comp, mask, lps = [eos], [0], [0.0]
            out["prompt_ids"].append(prompt)
            out["completion_ids"].append(comp)
            out["env_mask"].append(mask)
            out["logprobs"].append(lps)
            out["root_reward"].append(float(root.reward) if root.reward is not None else 0.0)
            out["root_score"].append(float(root.score) if root.score is not None else 0.0)
            out["tree_nodes"].append(len(tree.nodes))
        return out


def root_reward(completions: list[Any], root_reward: list[float], **kwargs: Any) -> list[float]:
    """The reward function for :class:`RootRolloutFunc` rows: the root's local reward, as the rollout reported it."""
    return [float(r) for r in root_reward]


# ============================================================================ environment_factory
def _method(name: str, doc: str, params: list[tuple[str, Any, Any, str]], body: Callable[..., str]) -> Callable[..., str]:
    """A method ``name(self, **params) -> str`` with a real signature, annotations and a Google docstring (TRL's tool schema)."""

    def method(self, **kwargs: Any) -> str:
        return body(self, kwargs)

    sig_params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for pname, hint, default, _ in params:
        sig_params.append(inspect.Parameter(pname, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=hint))
    method.__signature__ = inspect.Signature(sig_params, return_annotation=str)  # type: ignore[attr-defined]
    method.__annotations__ = {p[0]: p[1] for p in params} | {"return": str}
    args_doc = "".join(f"\n    {p[0]}: {p[3]}" for p in params)
    method.__doc__ = f"{doc}\n\nArgs:{args_doc}\n\nReturns:\n    What happened, and the steps left." if params else (
        f"{doc}\n\nReturns:\n    What happened, and the steps left.")
    method.__name__ = method.__qualname__ = name
    return method


class _ToolEnvBase:
    """Shared behaviour of the classes :func:`tool_environment` builds (one TRL rollout = one root node)."""

    env_id: str = ""
    env_kwargs: dict[str, Any] = {}
    tool_names: tuple[str, ...] = ()
    system_text: str = ""
    _factory: Callable[[], Any] | None = None
    _generate: Generator | None = None
    _chat: ChatTokens | None = None
    max_child_rounds: int = 256

    def __init__(self) -> None:
        self.engine: Any = None
        self.children_runs = 0

    @classmethod
    def bind(cls, trainer: Any = None, *, generator: Generator | None = None, tokenizer: Any = None) -> type:
        """Give delegated children a generation backend: the trainer's own (``bind(trainer)``) or ``generator`` + ``tokenizer``."""
        template = None
        if trainer is not None:
            generator, tokenizer = generator or generator_for(trainer), tokenizer or trainer.processing_class
            eos, template = trainer.eos_token_ids, getattr(trainer, "chat_template", None)  # TRL's training template
        else:
            if generator is None or tokenizer is None:
                raise ConfigError("bind(trainer), or bind(generator=..., tokenizer=...)")
            eos = None
        probe = cls()
        cls._generate = generator
        cls._chat = ChatTokens(tokenizer, eos_token_ids=eos, tools=[getattr(probe, n) for n in cls.tool_names],
                               chat_template=template)
        return cls

    @classmethod
    def dataset(cls, seeds: Iterable[int]):
        """Rows ``{"prompt": [system, user], "seed": s}``; :meth:`reset` appends the root's task to the user message."""
        from datasets import Dataset

        seeds = [check_seed(int(s)) for s in seeds]
        prompt = [{"role": "system", "content": cls.system_text}, {"role": "user", "content": "Your task:\n\n"}]
        return Dataset.from_dict({"prompt": [prompt] * len(seeds), "seed": seeds})

    def reset(self, **row: Any) -> str | None:
        """Start the episode of ``row["seed"]``; returns the root's task text (TRL appends it to the prompt)."""
        if type(self)._generate is None:
            raise ConfigError(f"{type(self).__name__} has no backend for delegated children: call "
                              f"{type(self).__name__}.bind(trainer) after building the trainer")
        if "seed" not in row:
            raise ConfigError("every dataset row needs a 'seed' (build it with the class's dataset(seeds))")
        self.engine = type(self)._factory()
        tree = self.engine.reset(check_seed(int(row["seed"])))
        tree.tree_id = f"{self.env_id}:{row['seed']}#tool{id(self)}"
        return tree.root.transcript[1]["content"]

    def get_reward(self) -> float:
        """The root's local reward R (score plus λ·children's mean score); 0 while it has not finished."""
        if self.engine is None:
            return 0.0
        root = self.engine.tree.root
        return float(root.reward) if root.status.ended and root.reward is not None else 0.0

    def _act(self, name: str, args: dict[str, Any]) -> str:
        engine = self.engine
        if engine is None:
            return "Error: the episode has not started."
        root = engine.tree.root
        if root.status.ended:
            return f"The task is over ({root.status.value}); do not call more tools."
        engine.step("0", Action(name=name, args=args))
        if root.status is WAITING:
            self._run_children()
        if root.status.ended:
            return "Finished." if root.status is NodeStatus.FINISHED else f"Your task ended: {root.status.value}."
        return engine.commit("0")[-1]["content"]

    def _messages(self, engine: Any, nid: str) -> list[dict[str, str]]:
        tr = engine.commit(nid)
        first = [{"role": "system", "content": self.system_text}]
        return first + [{"role": m["role"], "content": m["content"]} for m in tr[1:]]

    def _run_children(self) -> None:
        """Run the root's open children (and theirs) in rounds until the root can act again."""
        engine, cls = self.engine, type(self)
        tree, chat = engine.tree, cls._chat
        rounds = 0
        while tree.root.status is WAITING and not engine.done and rounds < self.max_child_rounds:
            rounds += 1
            batch = []
            for nid in engine.runnable():
                if nid == "0" or tree.nodes[nid].status is not RUNNING:
                    continue
                messages = self._messages(engine, nid)
                info = {**engine.node_info(nid), "env_id": tree.env_id, "seed": tree.seed, "tree_id": tree.tree_id, "group": 0}
                batch.append((nid, messages, Request(chat.prompt((id(self), nid), messages), messages, info)))
            if not batch:
                break
            outs = cls._generate([r for _, _, r in batch])
            for (nid, messages, req), gen in zip(batch, outs):
                if engine.done or tree.nodes[nid].status is not RUNNING:
                    continue
                eos = set(chat.eos_token_ids)
                text = gen.text if gen.text is not None else chat.tokenizer.decode(
                    [t for t in gen.token_ids if t not in eos], skip_special_tokens=False)
                chat.record((id(self), nid), req.prompt_ids, gen.token_ids, len(messages) + 1)
                engine.step(nid, Completion(text, list(gen.token_ids), gen.logprobs, list(req.prompt_ids)))
        self.children_runs += 1
        if tree.root.status is WAITING:  # the children did not end in time: the root stops waiting on them
            for cid in list(tree.root.children):
                if not tree.nodes[cid].status.ended:
                    engine.fail(cid, f"sub-agent did not end within {self.max_child_rounds} rounds")


def tool_environment(env_id: str, *, env_kwargs: dict[str, Any] | None = None, max_child_rounds: int = 256) -> type:
    """An ``environment_factory`` class for TRL's tool loop on task ``env_id`` (models that speak tool calls).

    One instance plays one root node. Its public methods are the task's tools plus
    ``delegate`` (a sub-agent: a fresh copy of the policy runs the child's own episode, with
    the generation backend given by ``Env.bind(trainer)``, and its result comes back as the
    tool's output) and ``finish``; ``get_reward`` is the root's local reward. Root only: the
    children's turns are generated, not trained (use :class:`RAOTreeTrainer` for that)::

        from trl import GRPOConfig, GRPOTrainer
        from rao_envs.adapters.trl import tool_environment

        model, tok = ..., ...  # any HF causal LM that speaks tool calls, and its tokenizer
        Env = tool_environment("Toy-v0", env_kwargs={"difficulty": "easy"})
        trainer = GRPOTrainer(model, args=GRPOConfig(...), train_dataset=Env.dataset(range(256)),
                              environment_factory=Env, processing_class=tok)
        Env.bind(trainer)
        trainer.train()

    Each ``delegate`` call runs its child to completion before it returns (one child per call).
    """
    env_id = task_spec(env_id).id
    env_kwargs = dict(env_kwargs or {})
    factory = engine_factory(env_id, **env_kwargs)
    task = factory().task
    attrs: dict[str, Any] = {}
    names = []
    for name, spec in task.tools.items():
        params = []
        for pname, finfo in spec.model.model_fields.items():
            default = inspect.Parameter.empty if finfo.is_required() else finfo.default
            params.append((pname, finfo.annotation, default, f"the {pname} argument of {name}"))
        attrs[name] = _method(name, spec.doc or f"The {name} tool.", params,
                              lambda self, kw, _n=name: self._act(_n, kw))
        names.append(name)
    task_args = delegate_params(task.delegate_args_doc)
    d_params = [("goal", str, inspect.Parameter.empty, "what the sub-agent must do, in one sentence")]
    d_params += [(n, h, inspect.Parameter.empty, f"the sub-task's {n}") for n, h in task_args]
    attrs["delegate"] = _method(
        "delegate", "Start a sub-agent (a fresh copy of you, without your history) on a sub-task and wait for its result.",
        d_params, lambda self, kw: self._act("delegate", kw))
    attrs["finish"] = _method(
        "finish", "End your task with your final answer.", [("result", str, inspect.Parameter.empty, "your final answer")],
        lambda self, kw: self._act("finish", kw))
    names += ["delegate", "finish"]
    system = (f"{task.system_prompt}\n\nUse the tools, one call per turn. delegate starts a sub-agent on a sub-task and "
              "returns its result; finish ends your task with your answer.")
    cls_name = "".join(ch for ch in env_id.title() if ch.isalnum()) + "ToolEnv"
    attrs.update(env_id=env_id, env_kwargs=env_kwargs, tool_names=tuple(names), system_text=system,
                 _factory=staticmethod(factory), max_child_rounds=max_child_rounds,
                 __doc__=f"TRL environment_factory class for {env_id} (see rao_envs.adapters.trl.tool_environment).")
    return type(cls_name, (_ToolEnvBase,), attrs)


# ============================================================================ async rollout worker
class RAORolloutWorker:
    """TRL's ``RolloutWorkerProtocol`` for ``AsyncGRPOTrainer``: RAO trees in, one ``RolloutSample`` per node (or turn) out.

    A background thread runs batches through :class:`rao_envs.rollout.RolloutDriver` against
    ``policy`` (any chat policy) or an OpenAI-compatible endpoint (``base_url``, ``model``:
    vLLM, SGLang, llama.cpp; vLLM needs ``policy_kwargs={"extra_body": {"return_token_ids": True}}``
    for exact ids). A batch is ``tasks_per_batch`` seeds × ``group_size`` trees; credit is
    assigned over the batch and every kept node (or turn) becomes a ``RolloutSample`` with
    ``input_ids`` = prompt + completion, ``completion_mask`` on the node's own assistant
    tokens, ``old_log_probs`` the sampled logprobs, ``advantage`` = ``A · w`` (the depth
    weight folded in: AsyncGRPO has no loss weight), ``group_id`` one per task of a batch,
    ``model_version`` the oldest policy version that acted for the node. Rows whose trained
    tokens lack logprobs are skipped (counted in ``rao/rows_without_logprobs``).
    ``tokenizer`` renders what the endpoint did not return as ids (use the model's own).
    """

    def __init__(
        self,
        env_id: str,
        *,
        policy: Any = None,
        base_url: str | None = None,
        model: str | None = None,
        tokenizer: Any = None,
        seeds: Iterable[int] | None = None,
        tasks_per_batch: int = 4,
        group_size: int = 8,
        credit: str = "rao",
        lam: float | None = None,
        credit_kwargs: dict[str, Any] | None = None,
        env_kwargs: dict[str, Any] | None = None,
        mode: Mode = "node",
        concurrency: int = 32,
        queue_maxsize: int = 4096,
        policy_kwargs: dict[str, Any] | None = None,
    ) -> None:
        from rao_envs.policies import OpenAIPolicy

        if credit not in METHODS:
            raise ConfigError(f"unknown credit method {credit!r}; choose one of {list(METHODS)}")
        if (policy is None) == (base_url is None):
            raise ConfigError("give either policy= (a chat policy) or base_url= and model= (an OpenAI-compatible endpoint)")
        if policy is None:
            policy = OpenAIPolicy(base_url, model or "default", **dict(policy_kwargs or {}))
        if group_size < 2:
            raise ConfigError(f"group_size must be at least 2 (the leave-one-out baseline), got {group_size}")
        self.env_id = task_spec(env_id).id
        self.env_kwargs = dict(env_kwargs or {})
        engine_factory(self.env_id, **self.env_kwargs)
        self.policy, self.tokenizer = policy, tokenizer
        self.seeds = iter(seeds) if seeds is not None else itertools.count()
        self.tasks_per_batch, self.group_size = tasks_per_batch, group_size
        self.credit_method, self.lam, self.credit_kwargs, self.mode = credit, lam, dict(credit_kwargs or {}), mode
        self.concurrency = concurrency
        self.rollout_buffer: queue.Queue = queue.Queue(maxsize=queue_maxsize)
        self.metrics_queue: queue.Queue = queue.Queue(maxsize=4096)
        self._version = 0
        self._groups = itertools.count()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._last_push = time.monotonic()
        self.batches = 0

    def update_model_version(self, model_version: int) -> None:
        """Tell the worker which policy version is live (new requests are stamped with it)."""
        self._version = int(model_version)

    def start(self) -> None:
        """Start producing samples in a daemon thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._last_push = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="rao-rollout-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (after its current batch) and release the endpoint client."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        close = getattr(self.policy, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                asyncio.run(close())

    def check_health(self, stale_after_s: float) -> None:
        """Raise if the worker crashed, or pushed nothing for ``stale_after_s`` seconds while running."""
        if self._error is not None:
            raise RuntimeError(f"RAO rollout worker failed: {type(self._error).__name__}: {self._error}") from self._error
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("RAO rollout worker is not running (call start())")
        if time.monotonic() - self._last_push > stale_after_s:
            raise RuntimeError(f"RAO rollout worker pushed no sample for {stale_after_s:.0f} s")

    def _loop(self) -> None:
        try:
            loop = asyncio.new_event_loop()
            try:
                while not self._stop.is_set():
                    samples, metrics = loop.run_until_complete(self.next_batch())
                    if not samples and self._stop.is_set():
                        break
                    for s in samples:
                        while not self._stop.is_set():
                            try:
                                self.rollout_buffer.put(s, timeout=0.5)
                                self._last_push = time.monotonic()
                                break
                            except queue.Full:
                                continue
                    with contextlib.suppress(queue.Full):
                        self.metrics_queue.put_nowait(metrics)
            finally:
                loop.close()
        except BaseException as exc:  # reported by check_health
            self._error = exc

    async def next_batch(self) -> tuple[list[Any], dict[str, float]]:
        """Run one batch of trees; return its ``RolloutSample`` s and the batch's metrics (also usable without the thread)."""
        from rao_envs.rollout import RolloutDriver
        from rao_envs.rows import rows_from_trees

        seeds = list(itertools.islice(self.seeds, self.tasks_per_batch))
        if not seeds:  # the seeds are exhausted: nothing more to produce
            self._stop.set()
            return [], {}
        driver = RolloutDriver(self.policy, concurrency=self.concurrency, policy_version=lambda: self._version)
        trees = await driver.run(self.env_id, seeds, group_size=self.group_size, env_kwargs=self.env_kwargs)
        credit = assign_credit(trees, self.credit_method, lam=self.lam, **self.credit_kwargs)
        rows = rows_from_trees(trees, self.tokenizer, mode=self.mode, credit=credit)
        self.last_trees, self.last_credit, self.last_rows = trees, credit, rows
        samples = self.samples(rows, trees)
        skipped = len(rows) - len(samples)
        stats = episode_stats(trees)
        metrics = {"rao/root_success": stats["root_success"], "rao/valid_action_rate": stats["valid_action_rate"],
                   "rao/nodes_per_tree": stats["nodes_per_tree"], "rao/samples": float(len(samples)),
                   "rao/rows_without_logprobs": float(skipped), "rao/infra_errors": float(driver.stats.infra_errors)}
        self.batches += 1
        return samples, metrics

    def samples(self, rows: list[dict[str, Any]], trees: list[EpisodeTree]) -> list[Any]:
        """``RolloutSample`` s of ``rows`` (rows of ``trees`` with credit), one ``group_id`` per task."""
        import numpy as np
        from trl.experimental.async_grpo.async_rollout_worker import RolloutSample

        groups: dict[str, int] = {}
        by_id = {t.tree_id: t for t in trees}
        out = []
        now = time.time()
        for r in rows:
            mask = [0] * len(r["prompt_ids"]) + list(r["loss_mask"])
            lps = [0.0] * len(r["prompt_ids"]) + [0.0 if lp is None else float(lp) for lp in r["logprobs"]]
            if any(m and lp is None for m, lp in zip(r["loss_mask"], r["logprobs"])):
                continue  # trained tokens need their sampling logprobs
            gid = groups.setdefault(r["task_id"], next(self._groups))
            tree = by_id.get(r["tree_id"])
            tr = tree.nodes[r["node_id"]].transcript if tree is not None else []
            first = next((i for i, m in enumerate(tr) if m["role"] == "assistant"), len(tr))
            last = max((i for i, m in enumerate(tr) if m["role"] == "assistant"), default=len(tr) - 1)
            adv, w = float(r["advantage"]), float(r["weight"])
            out.append(RolloutSample(
                prompt=[{"role": m["role"], "content": m["content"]} for m in tr[:first]],
                completion=[{"role": m["role"], "content": m["content"]} for m in tr[first: last + 1]],
                input_ids=np.asarray(list(r["prompt_ids"]) + list(r["completion_ids"]), dtype=np.int64),
                completion_mask=np.asarray(mask, dtype=np.int64),
                old_log_probs=np.asarray(lps, dtype=np.float32),
                advantage=adv * w,
                model_version=int(r["policy_version"] if r["policy_version"] is not None else self._version),
                group_id=gid,
                metrics={"reward": float(r["reward"] or 0.0), "rao/advantage": adv, "rao/weight": w,
                         "rao/depth": float(r["depth"]), "rao/score": float(r["score"] or 0.0)},
                enqueued_at=now,
            ))
        return out


# ============================================================================ small local models (moved: rao_envs.adapters.models)
from rao_envs.adapters.models import gguf_model_and_tokenizer, smollm2_model_and_tokenizer, tiny_model_and_tokenizer  # noqa: E402,F401


__all__ = [
    "TRL_VERSION", "ChatTokens", "Generated", "Generator", "HFGenerator", "RAORolloutWorker", "RAOTreeTrainer", "Request",
    "RootRolloutFunc", "TreeSampler", "VLLMGenerator", "evaluate", "generator_for", "gguf_model_and_tokenizer",
    "root_reward", "smollm2_model_and_tokenizer", "task_dataset", "tiny_model_and_tokenizer", "tool_environment",
]
