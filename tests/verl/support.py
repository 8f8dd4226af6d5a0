"""Shared pieces of the verl adapter tests: an oracle-mixing agent loop, a batch of outputs, the row checks."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import torch

from rao_envs.adapters.verl import CTPolicy, HFServer, RAOAgentLoop, local_agent_loop
from rao_envs.adapters.verl_dataset import verl_rows
from rao_envs.credit import masked_ids
from rao_envs.registration import engine_factory
from rao_envs.rows import node_rows


class OraclePolicy(CTPolicy):
    """:class:`CTPolicy` whose tree answers from the task's oracle: the server is made to return the oracle's tokens."""

    oracle: Any = None

    async def __call__(self, messages, info):
        text = self.oracle({"text": messages[-1]["content"], "node": info["node"], "depth": info["depth"]}, info)
        tok = self.loop.tokenizer
        self.loop.server_manager.forced[self.request_id(info["node"])] = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        return await super().__call__(messages, info)


class MixLoop(RAOAgentLoop):
    """The agent loop; sessions with ``oracle_sessions`` act with the task's oracle (real signal and children)."""

    oracle_sessions: set[int] = set()

    def make_policy(self, sampling_params, tag):
        if self._session in self.oracle_sessions:
            p = OraclePolicy(self, sampling_params, self.settings, request_prefix=tag)
            p.settings = self.settings.model_copy(update={"max_turn_tokens": None})  # oracle turns are not cut
            p.oracle = engine_factory(self._env_id, **self._env_kwargs)().task.oracle()
            return p
        return super().make_policy(sampling_params, tag)

    async def run(self, sampling_params, **kwargs):
        self._session = kwargs.get("session_id")
        self._env_id, _, self._env_kwargs = self.task_of(kwargs)
        return await super().run(sampling_params, **kwargs)


def run_trees(tok, server: HFServer, env_id: str, env_kwargs: dict, seeds, group: int, *, oracle=(0,), settings=None,
              prompt_length=2048, response_length=1024, loop_class=MixLoop):
    """Run ``group`` trees per seed as verl would (one loop run per sample); returns [(tree, outputs, loop, uid)]."""

    async def go():
        res = []
        for s in seeds:
            row = verl_rows(env_id, [s], env_kwargs=env_kwargs)[0]
            for g in range(group):
                loop = local_agent_loop(tok, server, prompt_length=prompt_length, response_length=response_length,
                                        rao_envs=settings or {"max_turn_tokens": 48}, loop_class=loop_class)
                if loop_class is MixLoop:
                    loop.oracle_sessions = set(oracle)
                outs = await loop.run({"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True}, **row,
                                      raw_prompt=row["prompt"], uid=f"uid{s}", session_id=g, global_steps=np.int64(7))
                res.append((loop.last_tree, outs, loop, f"uid{s}"))
        return res

    return asyncio.run(go())


def batch_of(runs) -> tuple[torch.Tensor, dict[str, np.ndarray], list[Any]]:
    """verl's view of the outputs: a right-padded response mask and object columns of the extra fields (plus uid)."""
    outs = [(o, uid) for _, os_, _, uid in runs for o in os_]
    width = max(len(o.response_mask) for o, _ in outs)
    mask = torch.zeros(len(outs), width, dtype=torch.long)
    for j, (o, _) in enumerate(outs):
        mask[j, : len(o.response_mask)] = torch.tensor(o.response_mask)
    keys = sorted({k for o, _ in outs for k in o.extra_fields})
    fields = {}
    for k in keys:
        col = np.empty(len(outs), dtype=object)
        col[:] = [o.extra_fields.get(k) for o, _ in outs]
        fields[k] = col
    uid = np.array([u for _, u in outs], dtype=object)
    return mask, fields, uid, [o for o, _ in outs]


def check_outputs(tree, outs, tokens) -> int:
    """Each output against its node's recorded transcript (rao_envs.rows) and the loop's token streams; returns #outputs."""
    by_node = {o.extra_fields["rao_node_id"]: o for o in outs}
    acted = [n for n in tree.walk() if any(m["role"] == "assistant" for m in n.transcript)]
    assert set(by_node) == {n.id for n in acted}, "one output per node that acted, and no other"
    assert tree.done and tree.root.status.ended
    masked = masked_ids(tree)  # infra_error nodes and their subtrees
    for node in acted:
        o = by_node[node.id]
        assert o.extra_fields["rao_tree_id"] == tree.tree_id and o.extra_fields["rao_depth"] == node.depth
        assert (o.extra_fields["rao_tree"] is not None) == (node.id == "0")
        [row] = node_rows(tree, node, mode="node")
        assert row["token_source"] == "recorded", "the engine recorded the verl prompt/completion ids"
        assert o.prompt_ids == row["prompt_ids"] == tokens[node.id].prompt_ids
        assert o.response_ids == row["completion_ids"], "the response is exactly what the node saw and wrote after its prompt"
        own = [t for m in node.transcript if m["role"] == "assistant" for t in m["token_ids"]]
        if node.id in masked:
            assert sum(o.response_mask) == 0, "infra_error nodes are masked out"
        else:
            assert o.response_mask == row["loss_mask"]
            assert [t for t, m in zip(o.response_ids, o.response_mask) if m] == own, "mask = the node's own sampled tokens"
        assert len(o.response_logprobs) == len(o.response_ids)
        for lp, ref, m in zip(o.response_logprobs, row["logprobs"], row["loss_mask"]):
            if m:
                assert math.isclose(lp, ref, abs_tol=1e-6)
            else:
                assert lp == 0.0
    return len(outs)


def model_logprobs(model, prompt: list[int], response: list[int]) -> torch.Tensor:
    """The model's own logprobs (temperature 1) of ``response`` after ``prompt``."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + response])).logits[0, len(prompt) - 1: -1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(response)[:, None]).squeeze(-1)
