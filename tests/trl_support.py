"""Shared pieces of the TRL adapter tests: a recording tree trainer, a scripted generator, the row checks."""

from __future__ import annotations

import math
from typing import Any

import torch

from rao_envs.adapters.trl import Generated, RAOTreeTrainer, Request
from rao_envs.credit import assign_credit
from rao_envs.registration import engine_factory
from rao_envs.types import EpisodeTree


class RecordingTreeTrainer(RAOTreeTrainer):
    """The tree trainer, keeping each generation step's trees and batch, and every batch its loss received."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.generations: list[tuple[list[EpisodeTree], dict[str, Any], torch.Tensor]] = []
        self.loss_inputs: list[dict[str, Any]] = []
        self.losses: list[float] = []

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        with torch.no_grad():  # the model's own logprobs of the rows, with the weights that sampled them
            ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
            attn = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
            logps, _, _ = self._get_per_token_logps_and_entropies(self.model, ids, attn, out["completion_ids"].size(1))
        self.generations.append((list(self.last_trees), out, logps))
        return out

    def _compute_loss(self, model, inputs):
        loss = super()._compute_loss(model, inputs)
        self.loss_inputs.append(dict(inputs))
        self.losses.append(float(loss.detach()))
        return loss


class OracleMix:
    """A generation backend for tests: trees picked by ``pick(info)`` answer from the task's oracle, the rest from ``model``.

    Gives a tiny random model's batch real signal (oracle trees succeed and delegate, model
    trees fail), so the plumbing from credit to loss is exercised with non-zero advantages.
    """

    def __init__(self, env_id: str, tokenizer: Any, env_kwargs: dict[str, Any], pick=lambda info: info["group"] % 2 == 0):
        self.task = engine_factory(env_id, **env_kwargs)().task
        self.tok, self.pick = tokenizer, pick
        self.model = None  # set once the trainer exists: HFGenerator.for_trainer(trainer)
        self.oracles: dict[str, Any] = {}

    def __call__(self, requests: list[Request]) -> list[Generated]:
        scripted = [self.pick(r.info) for r in requests]
        rest = [r for r, s in zip(requests, scripted) if not s]
        sampled = iter(self.model(rest) if rest else [])
        out = []
        for r, s in zip(requests, scripted):
            if not s:
                out.append(next(sampled))
                continue
            oracle = self.oracles.setdefault(r.info["tree_id"], self.task.oracle())
            text = oracle({"text": r.messages[-1]["content"], "node": r.info["node"], "depth": r.info["depth"]}, r.info)
            ids = self.tok(text, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
            out.append(Generated(ids, None, text))
        return out


def own_tokens(tree: EpisodeTree, node_id: str, turn: int) -> list[int]:
    """The token ids a node itself wrote (turn ``-1``: all its turns), from its transcript."""
    msgs = [m for m in tree.nodes[node_id].transcript if m["role"] == "assistant"]
    if turn >= 0:
        msgs = [msgs[turn]]
    return [t for m in msgs for t in m["token_ids"]]


def recorded_sequence(tree: EpisodeTree, node_id: str, upto_turn: int) -> list[int]:
    """Everything the node's model saw and wrote up to the end of turn ``upto_turn`` (``-1``: its last), as recorded."""
    tr = tree.nodes[node_id].transcript
    turns = [i for i, m in enumerate(tr) if m["role"] == "assistant"]
    ids: list[int] = []
    for a in turns[: (upto_turn + 1) if upto_turn >= 0 else None]:
        ids += tr[a - 1]["token_ids"] + tr[a]["token_ids"]
    return ids


def check_generation(trees: list[EpisodeTree], batch: dict[str, Any], *, method: str, lam: float | None,
                     mode: str) -> dict[str, Any]:
    """Every row the loss receives against an independent ``assign_credit`` on the same trees, and the transcripts.

    Returns counts: rows, child rows, non-zero advantages.
    """
    ref = assign_credit(trees, method, lam=lam)
    mask = (batch["completion_mask"] * batch["tool_mask"]).bool()
    seen: dict[tuple[int, str], int] = {}
    child_rows = nonzero = 0
    for j, (ti, nid, turn) in enumerate(batch["rao_keys"]):
        if ti < 0:  # padding row: trains nothing
            assert not mask[j].any() and float(batch["advantages"][j]) == 0.0
            continue
        adv, w = ref.advantage(ti, nid), ref.weight(ti, nid)
        assert adv is not None, f"row for a node credit dropped: {ti} {nid}"
        assert math.isclose(float(batch["rao_advantages"][j]), adv, abs_tol=1e-6)
        assert math.isclose(float(batch["rao_weights"][j]), w, rel_tol=1e-6)
        assert math.isclose(float(batch["advantages"][j]), adv * w, rel_tol=1e-5, abs_tol=1e-6)
        assert (turn == -1) == (mode == "node")
        tree = trees[ti]
        assert batch["completion_ids"][j][mask[j]].tolist() == own_tokens(tree, nid, turn), "mask must cover exactly the node's own tokens"
        p = batch["prompt_ids"][j][batch["prompt_mask"][j].bool()].tolist()
        c = batch["completion_ids"][j][batch["completion_mask"][j].bool()].tolist()
        assert p + c == recorded_sequence(tree, nid, turn), "a row is exactly what the model saw and wrote"
        if mode == "node":  # the prompt is the node's first prompt
            assert p == tree.nodes[nid].transcript[1]["token_ids"]
        seen[(ti, nid)] = seen.get((ti, nid), 0) + 1
        child_rows += nid != "0"
        nonzero += adv != 0.0
    acted = {(i, nid) for i, per in enumerate(ref.nodes) for nid in per
             if any(m["role"] == "assistant" for m in trees[i].nodes[nid].transcript)}
    assert set(seen) == acted, "every credited node that acted has its row(s), and no other node"
    if mode == "node":
        assert all(v == 1 for v in seen.values())
    else:
        for (ti, nid), v in seen.items():
            assert v == sum(m["role"] == "assistant" for m in trees[ti].nodes[nid].transcript)
    return {"rows": sum(seen.values()), "child_rows": child_rows, "nonzero": nonzero}
