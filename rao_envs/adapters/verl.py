"""verl adapter: an agent loop that runs whole RAO trees, and per-node credit in verl's loss.

Pinned and tested with **verl 0.9.1** (``pip install "rao_envs[verl]"`` in its own venv: verl
pins ``transformers<5.11``, TRL needs newer; torch 2.13 CPU wheel first). verl is imported
here and nowhere in the core. Three pieces:

* :class:`RAOAgentLoop` — an ``AgentLoopBase`` registered as ``"rao_envs"`` (dataset column
  ``agent_name``; rows from :mod:`rao_envs.adapters.verl_dataset`). ``run`` rebuilds the task
  from the row's ``extra_info`` (``env_id``, ``seed``, ``env_kwargs``: difficulty, limits),
  runs the whole tree through :class:`rao_envs.rollout.RolloutDriver` (children
  concurrently, answers applied in slot order) with :class:`CTPolicy`, which generates with
  ``server_manager.generate`` on token-exact prompts built by verl's Continuous Token helpers
  (``ct_build_initial_tokens``, ``ct_merge_context_msg``, ``ct_merge_assistant_token``), and
  returns **one** ``AgentLoopOutput`` **per node that acted**: the node's first prompt, every
  token after it, ``response_mask`` = 1 on the node's own sampled tokens only, the sampled
  logprobs, and ``extra_fields`` with ``rao_tree_id``, ``rao_node_id``, ``rao_parent_id``,
  ``rao_depth``, ``rao_task_id``, ``rao_status``, ``rao_masked`` and, on the root's output,
  ``rao_tree`` (the tree's skeleton as JSON: statuses, scores, links; no transcripts).
  Failures: the server raising, a ``generate`` past ``timeout_s``, or a prompt past verl's
  ``prompt_length`` / ``response_length`` mark the node ``infra_error`` (its output's mask is
  all 0; credit masks its subtree) and the tree goes on.
* :func:`rao_advantages` — the per-node estimator: it rebuilds the G trees of each task from
  the batch's skeletons, applies :func:`rao_envs.credit.assign_credit` (``rao`` by default;
  every method of :data:`~rao_envs.credit.METHODS`), and gives every token of a node's own
  response ``A · w`` (its advantage times its depth weight: verl's loss has no per-row
  weight in 0.9.1), instead of verl's broadcast of the last row. Registered the verl way
  as the advantage estimator ``"rao_envs"`` (:func:`compute_rao_outcome_advantage`).
* :func:`rao_trainer_class` — verl 0.9.1's V1 trainer is the only one that accepts a list of
  outputs per sample, and its advantage step hands a registered estimator only
  ``token_level_rewards``, ``response_mask``, ``index`` and ``config``: it registers
  ``trainer.v1.trainer_mode=rao_sync``, the sync V1 trainer whose advantage step also reads
  the ``rao_*`` fields and calls :func:`rao_advantages`. :func:`setup_worker` (a Ray
  ``worker_process_setup_hook``) registers all three in every verl worker;
  ``examples/verl_rao.yaml`` is the config and ``examples/verl_agent_loop.py`` the launcher.

Settings come from the config block ``rao_envs`` (``+rao_envs.credit=rao`` on verl's command
line; :class:`RAOSettings`); the row's own ``extra_info`` overrides ``env_id``/``env_kwargs``.

verl 0.9.1 behaviour worked around here (check when moving the pin):

* ``from verl.experimental.agent_loop import ...`` needs ``cachetools``, ``uvicorn`` and
  ``fastapi``, which the base install lacks (the ``verl`` extra adds them).
* ``ct_build_initial_tokens`` silently left-truncates a prompt past ``prompt_length``; the
  loop checks the length itself and marks such a node ``infra_error`` instead.
* The V1 agent-loop worker copies the last output's ``reward_score`` to every output of a
  sample and reads its ``extra_fields["reward_extra_info"]``: every output carries the root's
  local reward and an empty ``reward_extra_info``; per-node rewards live in ``rao_tree``.
* The legacy (V0) trainer takes exactly one output per sample: use the V1 trainer.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import verl
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput, register
from verl.trainer.ppo.core_algos import register_adv_est

from rao_envs.adapters.verl_dataset import AGENT_NAME
from rao_envs.credit import METHODS, Credit, assign_credit, masked_ids
from rao_envs.errors import ConfigError
from rao_envs.policies.base import Completion, NodeInfo, PolicyError
from rao_envs.registration import task_spec
from rao_envs.rollout import RolloutDriver
from rao_envs.types import EpisodeTree

VERL_VERSION = "0.9.1"
"""The verl version this adapter is tested with (the ``verl`` extra pins it)."""

if verl.__version__ != VERL_VERSION:
    warnings.warn(f"rao_envs.adapters.verl is tested with verl=={VERL_VERSION}; found {verl.__version__}", stacklevel=2)

#: the per-output fields the estimator reads (``extra_fields`` of each ``AgentLoopOutput``)
RAO_FIELDS = ("rao_tree_id", "rao_node_id", "rao_parent_id", "rao_depth", "rao_task_id", "rao_status", "rao_masked", "rao_tree")


class RAOSettings(BaseModel):
    """The ``rao_envs`` config block: what the agent loop runs and how credit is assigned."""

    model_config = ConfigDict(extra="forbid")

    env_id: str | None = None
    """Task when a row has no ``extra_info.env_id``."""
    env_kwargs: dict[str, Any] = Field(default_factory=dict)
    """``make`` kwargs (difficulty, limits) merged under each row's own."""
    credit: str = "rao"
    """Credit method of :mod:`rao_envs.credit`: rao, root, depth_grpo, sibling."""
    lam: float | None = None
    """λ of the local reward (default: each tree's own)."""
    drop_no_signal: bool = True
    depth_weighting: bool = True
    std_normalize: bool = False
    max_turn_tokens: int | None = Field(None, ge=1)
    """Tokens one turn may generate (default: what is left of ``response_length``)."""
    timeout_s: float = Field(600.0, gt=0)
    """A ``generate`` call slower than this marks its node ``infra_error``."""
    concurrency: int = Field(32, ge=1)
    """Requests in flight per tree."""

    @classmethod
    def from_config(cls, config: Any) -> RAOSettings:
        """The settings of a verl config (its ``rao_envs`` block; defaults when absent)."""
        block = config.get("rao_envs") if hasattr(config, "get") else None
        if block is None:
            return cls()
        try:
            from omegaconf import OmegaConf

            block = OmegaConf.to_container(block, resolve=True) if not isinstance(block, dict) else block
        except ImportError:  # pragma: no cover - verl always has omegaconf
            block = dict(block)
        try:
            out = cls(**block)
        except ValidationError as exc:
            raise ConfigError(f"invalid rao_envs config block: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
        if out.credit not in METHODS:
            raise ConfigError(f"rao_envs.credit={out.credit!r} is not a credit method; choose one of {list(METHODS)}")
        return out

    def credit_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`rao_envs.credit.assign_credit`."""
        return {"lam": self.lam, "drop_no_signal": self.drop_no_signal, "depth_weighting": self.depth_weighting,
                "std_normalize": self.std_normalize}


# ============================================================================ generation with Continuous Token prompts
@dataclass
class NodeTokens:
    """One node's token stream: its first prompt, everything after it, the mask and logprobs verl trains on."""

    prompt_ids: list[int]
    ids: list[int]
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    has_logprobs: bool = True
    n_messages: int = 0
    turns: int = 0
    end: int = 0
    """Length of ``ids`` after the last sampled turn (context merged after it is not trained)."""

    @property
    def response_ids(self) -> list[int]:
        """Every token after the first prompt up to the end of the last sampled turn."""
        return self.ids[len(self.prompt_ids): self.end]

    @property
    def response_mask(self) -> list[int]:
        """1 on the node's own sampled tokens of :attr:`response_ids`, 0 on the context between them."""
        return self.mask[: self.end - len(self.prompt_ids)]

    @property
    def response_logprobs(self) -> list[float]:
        """The sampled tokens' logprobs (0.0 on context tokens), aligned with :attr:`response_ids`."""
        return self.logprobs[: self.end - len(self.prompt_ids)]


class CTPolicy:
    """A chat policy for :class:`~rao_envs.rollout.RolloutDriver` that generates through a verl agent loop's server.

    A node's first prompt is ``ct_build_initial_tokens`` of its chat; each later prompt is the
    previous stream plus ``ct_merge_context_msg`` of the new messages; the sampled tokens are
    appended with ``ct_merge_assistant_token`` (mask 1, their logprobs). The answer goes to
    the engine as a :class:`~rao_envs.policies.Completion` with the prompt and sampled ids,
    which the engine records on the transcript. Failures raise :class:`PolicyError` (the
    driver marks the node ``infra_error``).
    """

    def __init__(self, loop: AgentLoopBase, sampling_params: dict[str, Any], settings: RAOSettings, request_prefix: str) -> None:
        self.loop, self.settings, self.prefix = loop, settings, request_prefix
        self.sampling_params = dict(sampling_params)
        self.prompt_length = int(loop.rollout_config.prompt_length)
        self.response_length = int(loop.rollout_config.response_length)
        self.nodes: dict[str, NodeTokens] = {}
        self.generate_s = 0.0

    def request_id(self, nid: str) -> str:
        """The id of node ``nid``'s next ``generate`` request (sticky per node: ``PREFIX/NODE/TURN``)."""
        st = self.nodes.get(nid)
        return f"{self.prefix}/{nid}/{st.turns if st is not None else 0}"

    async def _initial(self, messages: list[dict[str, str]]) -> list[int]:
        builder = self.loop.continuous_token_builder  # ct_build_initial_tokens without its silent left-truncation
        ids = await asyncio.get_running_loop().run_in_executor(None, lambda: builder.build_initial_tokens(messages))
        return [int(t) for t in ids]

    async def __call__(self, messages: list[dict[str, str]], info: NodeInfo) -> Completion:
        """Generate the node's next turn (its chat so far is ``messages``)."""
        nid = info["node"]
        st = self.nodes.get(nid)
        try:
            if st is None:
                ids = await self._initial(messages)
                if len(ids) > self.prompt_length:
                    raise PolicyError(f"the node's first prompt has {len(ids)} tokens; rollout.prompt_length is {self.prompt_length}")
                st = self.nodes[nid] = NodeTokens(prompt_ids=list(ids), ids=list(ids))
            else:
                merge, mask, lps = await self.loop.ct_merge_context_msg(
                    messages[: st.n_messages], messages, st.ids, st.mask, st.logprobs)
                if len(merge.token_ids) - len(st.prompt_ids) >= self.response_length:
                    raise PolicyError(f"the node's context outgrew rollout.response_length={self.response_length}")
                st.ids, st.mask, st.logprobs = list(merge.token_ids), list(mask), list(lps)
        except PolicyError:
            raise
        except Exception as exc:  # the chat template could not extend the node's tokens
            raise PolicyError(f"continuous-token prompt failed: {type(exc).__name__}: {exc}") from exc
        room = self.response_length - (len(st.ids) - len(st.prompt_ids))
        params = dict(self.sampling_params)
        params["max_tokens"] = min(room, self.settings.max_turn_tokens or room)
        prompt = list(st.ids)
        t0 = time.perf_counter()
        try:
            out = await asyncio.wait_for(
                self.loop.server_manager.generate(request_id=self.request_id(nid), prompt_ids=prompt, sampling_params=params),
                timeout=self.settings.timeout_s,
            )
        except asyncio.TimeoutError:
            raise PolicyError(f"generate timed out after {self.settings.timeout_s:g} s") from None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise PolicyError(f"server_manager.generate failed: {type(exc).__name__}: {exc}") from exc
        finally:
            self.generate_s += time.perf_counter() - t0
        tokens = [int(t) for t in (out.token_ids or [])][: params["max_tokens"]]
        lps = out.log_probs
        lps = [float(x) for x in lps[: len(tokens)]] if lps is not None and len(lps) >= len(tokens) else None
        if lps is None:
            st.has_logprobs = False
        merge, mask, logprobs = await self.loop.ct_merge_assistant_token(
            st.ids, tokens, st.mask, st.logprobs, lps if lps is not None else [0.0] * len(tokens))
        st.ids, st.mask, st.logprobs = list(merge.token_ids), list(mask), list(logprobs)
        st.n_messages = len(messages) + 1
        st.turns += 1
        st.end = len(st.ids)
        text = self.loop.tokenizer.decode(tokens, skip_special_tokens=True)
        return Completion(text, token_ids=tokens, logprobs=lps, prompt_token_ids=prompt)


# ============================================================================ the agent loop
def tree_skeleton(tree: EpisodeTree) -> str:
    """The tree as JSON without what credit does not read (transcripts, results, snapshots)."""
    skel = tree.model_copy(deep=True)
    skel.instance = {}
    for node in skel.nodes.values():
        node.transcript, node.result, node.spawn_snapshot, node.context = [], None, None, None
    return skel.to_json()


def tree_outputs(tree: EpisodeTree, tokens: Mapping[str, NodeTokens], *, metrics: AgentLoopMetrics | None = None,
                 pad_token_id: int = 0) -> list[AgentLoopOutput]:
    """One ``AgentLoopOutput`` per node of ``tree`` that acted, root first (masked nodes: mask all 0)."""
    from rao_envs.credit import task_id

    masked = masked_ids(tree)
    root_reward = tree.root.reward if tree.root.reward is not None else 0.0
    skeleton = tree_skeleton(tree)
    outs = []
    for node in tree.walk():
        st = tokens.get(node.id)
        if st is None or not st.turns:
            continue
        is_masked = node.id in masked
        response = st.response_ids
        mask = [0] * len(response) if is_masked else st.response_mask
        extra = {
            "rao_tree_id": tree.tree_id, "rao_node_id": node.id, "rao_parent_id": node.parent, "rao_depth": node.depth,
            "rao_task_id": task_id(tree), "rao_status": node.status.value, "rao_masked": is_masked,
            "rao_tree": skeleton if node.id == "0" else None, "reward_extra_info": {},
        }
        outs.append(AgentLoopOutput(
            prompt_ids=list(st.prompt_ids), response_ids=list(response), response_mask=mask,
            response_logprobs=st.response_logprobs if st.has_logprobs else None,
            reward_score=float(root_reward), num_turns=len(node.transcript),
            metrics=metrics or AgentLoopMetrics(), extra_fields=extra,
        ))
    if not outs:  # the root failed before its first token: one inert output so verl's batch is never empty
        outs.append(AgentLoopOutput(
            prompt_ids=[pad_token_id], response_ids=[pad_token_id], response_mask=[0], reward_score=0.0,
            metrics=metrics or AgentLoopMetrics(),
            extra_fields={"rao_tree_id": tree.tree_id, "rao_node_id": "0", "rao_parent_id": None, "rao_depth": 0,
                          "rao_task_id": task_id(tree), "rao_status": tree.root.status.value, "rao_masked": True,
                          "rao_tree": skeleton, "reward_extra_info": {}},
        ))
    return outs


@register(AGENT_NAME)
class RAOAgentLoop(AgentLoopBase):
    """verl agent loop ``"rao_envs"``: one whole RAO tree per dataset row, one output per node (module docstring).

    After ``run``, ``last_tree`` and ``last_tokens`` hold the tree and each node's token stream.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = RAOSettings.from_config(self.config)
        self.last_tree: EpisodeTree | None = None
        self.last_tokens: dict[str, NodeTokens] = {}

    def task_of(self, kwargs: Mapping[str, Any]) -> tuple[str, int, dict[str, Any]]:
        """``(env_id, seed, env_kwargs)`` of a dataset row (its ``extra_info``, then the config block)."""
        extra = kwargs.get("extra_info") or {}
        env_id = extra.get("env_id") or self.settings.env_id
        if not env_id:
            raise ConfigError("the row has no extra_info.env_id and rao_envs.env_id is unset; build rows with `rao-envs verl-dataset`")
        if extra.get("seed") is None:
            raise ConfigError("the row has no extra_info.seed; build rows with `rao-envs verl-dataset`")
        row_kwargs = extra.get("env_kwargs") or {}
        if isinstance(row_kwargs, str):
            row_kwargs = json.loads(row_kwargs) if row_kwargs.strip() else {}
        return task_spec(env_id).id, int(extra["seed"]), {**self.settings.env_kwargs, **dict(row_kwargs)}

    def make_policy(self, sampling_params: dict[str, Any], tag: str) -> CTPolicy:
        """The chat policy one tree runs with (override to wrap it)."""
        return CTPolicy(self, sampling_params, self.settings, request_prefix=tag)

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> list[AgentLoopOutput]:
        """Run the row's tree; return one output per node that acted."""
        self.loop = asyncio.get_running_loop()  # the ct_* helpers' executor loop (the loop may be built outside it)
        env_id, seed, env_kwargs = self.task_of(kwargs)
        session = kwargs.get("session_id")
        tag = f"{kwargs.get('uid', uuid.uuid4().hex[:12])}" + (f"_{session}" if session is not None else "")
        policy = self.make_policy(sampling_params, tag)
        step = kwargs.get("global_steps")  # the weights version that acts (numpy ints in verl's batch: made plain)
        driver = RolloutDriver(policy, concurrency=self.settings.concurrency,
                               policy_version=int(step) if step is not None else None)
        t0 = time.perf_counter()
        [tree] = await driver.run(env_id, [seed], env_kwargs=env_kwargs)
        tree.tree_id = f"{env_id}:{seed}#{tag}"
        self.last_tree, self.last_tokens = tree, policy.nodes
        metrics = AgentLoopMetrics(generate_sequences=policy.generate_s, tool_calls=time.perf_counter() - t0 - policy.generate_s)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        return tree_outputs(tree, policy.nodes, metrics=metrics, pad_token_id=pad)


# ============================================================================ per-node credit
def _column(fields: Mapping[str, Any], key: str, n: int) -> list[Any]:
    if key in fields:
        return list(fields[key])
    extra = fields.get("extra_fields")
    if extra is not None:
        return [(e or {}).get(key) if isinstance(e, Mapping) else None for e in extra]
    raise ConfigError(f"the batch has no {key!r} field: its rows were not produced by the rao_envs agent loop")


def rao_advantages(
    response_mask: Any,
    fields: Mapping[str, Sequence[Any]],
    *,
    method: str = "rao",
    groups: Sequence[Any] | None = None,
    **credit_kwargs: Any,
) -> tuple[Any, Credit, list[EpisodeTree]]:
    """Per-token advantages ``A · w`` for a batch of agent-loop outputs, with :func:`~rao_envs.credit.assign_credit`.

    ``fields`` maps the ``rao_*`` names (:data:`RAO_FIELDS`) to one value per row (verl's
    ``non_tensor_batch``, or an ``extra_fields`` column of dicts); ``groups`` (verl's ``uid``,
    one per row) groups the trees of one prompt, else trees group by task. Rows of masked or
    dropped nodes, and of trees whose skeleton is absent, get 0. Returns the advantages
    (shape of ``response_mask``), the credit and the rebuilt trees (credit's tree order).
    """
    import torch

    n = int(response_mask.shape[0])
    tree_ids = _column(fields, "rao_tree_id", n)
    node_ids = _column(fields, "rao_node_id", n)
    skeletons = _column(fields, "rao_tree", n)
    trees: dict[str, EpisodeTree] = {}
    tree_group: dict[str, Any] = {}
    for j in range(n):
        tid = tree_ids[j]
        if skeletons[j] and tid not in trees:
            trees[tid] = EpisodeTree.from_json(skeletons[j])
        if groups is not None and tid is not None:
            tree_group.setdefault(tid, groups[j])
    order = list(trees)
    keys = [tree_group.get(t, trees[t].env_id + str(trees[t].seed)) for t in order] if groups is not None else None
    credit = assign_credit([trees[t] for t in order], method, groups=keys, **credit_kwargs)
    index = {t: i for i, t in enumerate(order)}
    values = []
    for j in range(n):
        i = index.get(tree_ids[j])
        c = credit.nodes[i].get(node_ids[j]) if i is not None else None
        values.append(0.0 if c is None else c.advantage * c.weight)
    adv = torch.tensor(values, dtype=torch.float32).unsqueeze(-1) * response_mask.to(torch.float32)
    return adv, credit, [trees[t] for t in order]


@register_adv_est(AGENT_NAME)
def compute_rao_outcome_advantage(
    token_level_rewards: Any,
    response_mask: Any,
    index: Any = None,
    config: Any = None,
    non_tensor_batch: Mapping[str, Any] | None = None,
    settings: RAOSettings | None = None,
    **kwargs: Any,
) -> tuple[Any, Any]:
    """verl advantage estimator ``"rao_envs"``: ``(advantages, returns)`` from the batch's trees (:func:`rao_advantages`).

    Needs the ``rao_*`` fields (``non_tensor_batch``), which verl 0.9.1's stock advantage step
    does not pass: run with ``trainer.v1.trainer_mode=rao_sync`` (:func:`rao_trainer_class`).
    ``settings`` (else ``config.rao_envs``) choose the credit method and options.
    """
    if non_tensor_batch is None:
        raise ConfigError(
            "the rao_envs estimator needs the batch's rao_* fields; verl 0.9.1 passes them only from the RAO trainer: "
            "set trainer.v1.trainer_mode=rao_sync and start training with examples/verl_agent_loop.py"
        )
    if settings is None:
        settings = RAOSettings.from_config(config) if config is not None else RAOSettings()
    adv, _, _ = rao_advantages(response_mask, non_tensor_batch, method=settings.credit, groups=index,
                               **settings.credit_kwargs())
    return adv, adv


# ============================================================================ a local server (CPU smoke runs, tests)
class HFServer:
    """A stand-in for verl's ``server_manager``: ``generate`` samples from a local Hugging Face causal LM.

    Returns verl's ``TokenOutput`` (token ids with their logprobs, ``log_softmax(logits / T)``).
    ``temperature`` 0 is greedy. ``forced[request_id] = ids`` makes that request return ``ids``
    (scored by the model: their logprobs are real), which scripted tests use.
    """

    def __init__(self, model: Any, tokenizer: Any, *, seed: int = 0) -> None:
        import torch

        self.model, self.tokenizer = model.eval(), tokenizer
        self.eos = {int(tokenizer.eos_token_id)}
        self.forced: dict[str, list[int]] = {}
        self.calls = 0
        self.generator = torch.Generator().manual_seed(seed)

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any], **kwargs: Any) -> Any:
        """One completion of ``prompt_ids`` (at most ``sampling_params["max_tokens"]`` tokens, the end token included)."""
        import torch
        from verl.workers.rollout.replica import TokenOutput

        self.calls += 1
        limit = int(sampling_params.get("max_tokens") or 64)
        temp = float(sampling_params.get("temperature", 1.0) or 0.0)
        ids = torch.tensor([prompt_ids])
        out: list[int] = []
        lps: list[float] = []
        forced = self.forced.pop(request_id, None)
        with torch.no_grad():
            if forced is not None:
                forced = list(forced)[:limit]
                logits = self.model(torch.tensor([list(prompt_ids) + forced])).logits[0, len(prompt_ids) - 1: -1].float()
                logp = torch.log_softmax(logits / (temp or 1.0), dim=-1)
                return TokenOutput(token_ids=forced, log_probs=[float(logp[i, t]) for i, t in enumerate(forced)], stop_reason="stop")
            past = None
            step = ids
            for _ in range(limit):
                res = self.model(step, past_key_values=past, use_cache=True)
                past = res.past_key_values
                logits = res.logits[0, -1].float()
                logp = torch.log_softmax(logits / (temp or 1.0), dim=-1)
                if temp > 0:
                    t = int(torch.multinomial(torch.softmax(logits / temp, dim=-1), 1, generator=self.generator))
                else:
                    t = int(torch.argmax(logits))
                out.append(t)
                lps.append(float(logp[t]))
                if t in self.eos:
                    break
                step = torch.tensor([[t]])
        return TokenOutput(token_ids=out, log_probs=lps, stop_reason="stop" if out and out[-1] in self.eos else "length")


def local_agent_loop(
    tokenizer: Any,
    server: Any,
    *,
    prompt_length: int = 2048,
    response_length: int = 2048,
    rao_envs: dict[str, Any] | None = None,
    loop_class: type[RAOAgentLoop] | None = None,
) -> RAOAgentLoop:
    """An agent loop built the way verl's worker builds it, outside Ray (CPU smoke runs, tests).

    ``server`` is any object with verl's ``async generate(request_id, *, prompt_ids,
    sampling_params)`` (:class:`HFServer`); ``rao_envs`` is the config block (:class:`RAOSettings`).
    """
    from omegaconf import OmegaConf
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap
    from verl.utils.dataset.rl_dataset import RLHFDataset

    cfg = OmegaConf.create({
        "actor_rollout_ref": {"rollout": {"prompt_length": prompt_length, "response_length": response_length}},
        "data": {"apply_chat_template_kwargs": {}},
        "rao_envs": dict(rao_envs or {}),
    })
    cls = loop_class or RAOAgentLoop
    return cls(trainer_config=DictConfigWrap(cfg), server_manager=server, tokenizer=tokenizer, processor=None,
               dataset_cls=RLHFDataset, data_config=DictConfigWrap(cfg.data))


# ============================================================================ the V1 trainer (GPU runs)
_TRAINER: Any = None


def rao_trainer_class() -> Any:
    """Register (once) and return verl's sync V1 trainer with per-node credit, ``trainer.v1.trainer_mode=rao_sync``.

    Its advantage step reads the ``rao_*`` fields with the stock fields from verl's
    TransferQueue and calls :func:`compute_rao_outcome_advantage` with the ``rao_envs``
    config block. Imported lazily: the V1 trainer needs ``transfer_queue`` (verl-core) and GPUs.
    :func:`setup_worker` calls it in every Ray worker.
    Not run on CPU in this project's tests (see ``benchmarks/gpu_verl.sh``).
    """
    global _TRAINER
    if _TRAINER is not None:
        return _TRAINER
    import numpy as np
    import transfer_queue as tq
    from verl import DataProto
    from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer

    class RAOPPOTrainerSync(PPOTrainerSync):
        """verl's sync V1 trainer whose advantages are RAO per-node credit (:func:`rao_advantages`)."""

        def _compute_advantage(self, batch: Any, metrics: dict) -> Any:
            settings = RAOSettings.from_config(self.config)
            data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                                   select_fields=["uid", "response_mask", "extra_fields"])
            mask = data["response_mask"]  # nested (one row per output), as verl's own advantage step reads it
            padded = DataProto(batch=data.select("response_mask").to_padded_tensor())
            extra = data["extra_fields"].tolist() if "extra_fields" in data.keys() else []  # a NonTensorStack of dicts
            uid = np.array(data["uid"].tolist(), dtype=object)
            adv, credit, trees = rao_advantages(padded.batch["response_mask"], {"extra_fields": extra}, method=settings.credit,
                                                groups=uid, **settings.credit_kwargs())
            metrics["rao/trees"] = len(trees)
            metrics["rao/credited_nodes"] = len(credit)
            metrics["rao/dropped_groups"] = len(credit.dropped_groups)
            from tensordict import TensorDict
            from verl.workers.utils.padding import response_to_nested as nested

            out = TensorDict({"advantages": nested(adv, mask), "returns": nested(adv, mask)}, batch_size=len(batch))
            return tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=out)

    _TRAINER = register_trainer("rao_sync")(RAOPPOTrainerSync)
    return _TRAINER


def setup_worker() -> None:
    """Ray ``worker_process_setup_hook`` for verl runs: registers the agent loop, the estimator and ``rao_sync``.

    ``+ray_kwargs.ray_init.runtime_env.worker_process_setup_hook=rao_envs.adapters.verl.setup_worker``
    (``examples/verl_rao.yaml`` sets it): importing this module registers ``"rao_envs"`` as an
    agent loop and as an advantage estimator in every Ray worker, and the V1 trainer mode is
    registered where verl's TransferQueue is installed.
    """
    try:
        rao_trainer_class()
    except ImportError:  # no transfer_queue (CPU tests, the legacy trainer): the loop and estimator are registered
        pass


__all__ = [
    "AGENT_NAME", "CTPolicy", "HFServer", "NodeTokens", "RAOAgentLoop", "RAOSettings", "RAO_FIELDS", "VERL_VERSION",
    "compute_rao_outcome_advantage", "local_agent_loop", "rao_advantages", "rao_trainer_class", "setup_worker", "tree_outputs", "tree_skeleton",
]
