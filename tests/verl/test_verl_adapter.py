"""The verl adapter on CPU, no download: the agent loop standalone against a server that samples a tiny local model.

Trees complete; every output's ids, mask and logprobs match its node's recorded transcript
(and the model's own logprobs); the estimator's advantages equal ``rao_envs.credit`` on the
same trees node by node, for every method; the server raising or timing out marks the node
``infra_error`` and masks it. Trees of even sessions answer from the task's oracle, so a
random model's batch has real signal and children.
"""

from __future__ import annotations

import asyncio
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import verl
from omegaconf import OmegaConf
from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, get_adv_estimator_fn

from rao_envs.adapters.models import tiny_model_and_tokenizer
from rao_envs.adapters.verl import (
    VERL_VERSION,
    HFServer,
    RAOAgentLoop,
    RAOSettings,
    compute_rao_outcome_advantage,
    local_agent_loop,
    rao_advantages,
)
from rao_envs.adapters.verl_dataset import AGENT_NAME, verl_rows, write_verl_dataset
from rao_envs.credit import METHODS, assign_credit
from rao_envs.errors import ConfigError
from rao_envs.types import NodeStatus
from tests.verl.support import MixLoop, batch_of, check_outputs, model_logprobs, run_trees

REPO = Path(__file__).resolve().parents[2]
TOY = {"difficulty": "easy", "max_depth": 1, "max_steps_per_node": 3}
TEXTCRAFT = {"difficulty": "easy", "max_depth": 1, "max_steps_per_node": 3}
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    """A tiny Qwen2 model and tokenizer trained on Toy and TextCraft oracle text."""
    torch.manual_seed(0)
    return tiny_model_and_tokenizer(["Toy-v0", "TextCraft-v0"], env_kwargs={"difficulty": "easy"}, episodes=4)


@pytest.fixture(scope="module")
def toy_runs(tiny):
    """2 Toy tasks × G=2 trees (session 0 of each task answers from the oracle)."""
    model, tok = tiny
    return run_trees(tok, HFServer(model, tok), "Toy-v0", TOY, [3, 4], 2)


def test_pinned_version_and_registration():
    assert verl.__version__ == VERL_VERSION
    assert f'"verl=={VERL_VERSION}"' in (REPO / "pyproject.toml").read_text()
    assert _agent_loop_registry[AGENT_NAME] == {"_target_": "rao_envs.adapters.verl.RAOAgentLoop"}
    assert get_adv_estimator_fn(AGENT_NAME) is compute_rao_outcome_advantage
    assert ADV_ESTIMATOR_REGISTRY[AGENT_NAME] is compute_rao_outcome_advantage


def test_hydra_builds_the_loop_like_verls_worker(tiny):
    """verl's worker instantiates a registered loop with hydra and these exact arguments."""
    import hydra
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap
    from verl.utils.dataset.rl_dataset import RLHFDataset

    model, tok = tiny
    cfg = OmegaConf.create({"actor_rollout_ref": {"rollout": {"prompt_length": 1024, "response_length": 512}},
                            "data": {"apply_chat_template_kwargs": {}}, "rao_envs": {"credit": "sibling", "lam": 0.5}})

    async def build():
        return hydra.utils.instantiate(
            config=_agent_loop_registry[AGENT_NAME], trainer_config=DictConfigWrap(config=cfg), server_manager=HFServer(model, tok),
            tokenizer=tok, processor=None, hf_model_type=None, dataset_cls=RLHFDataset, data_config=DictConfigWrap(cfg.data),
            tools=ToolListWrap([]))

    loop = asyncio.run(build())
    assert isinstance(loop, RAOAgentLoop)
    assert loop.settings.credit == "sibling" and loop.settings.lam == 0.5


@pytest.mark.parametrize(("env_id", "env_kwargs"), [("Toy-v0", TOY), ("TextCraft-v0", TEXTCRAFT)], ids=["toy", "textcraft"])
def test_trees_complete_and_outputs_match_transcripts(tiny, toy_runs, env_id, env_kwargs):
    model, tok = tiny
    runs = toy_runs if env_id == "Toy-v0" else run_trees(tok, HFServer(model, tok), env_id, env_kwargs, [5], 2)
    n_out = children = 0
    for tree, outs, loop, _ in runs:
        n_out += check_outputs(tree, outs, loop.last_tokens)
        children += sum(o.extra_fields["rao_depth"] > 0 for o in outs)
        for o in outs:  # logprobs are the model's own (temperature 1) on the trained tokens
            ref = model_logprobs(model, o.prompt_ids, o.response_ids)
            m = torch.tensor(o.response_mask, dtype=torch.bool)
            assert torch.allclose(torch.tensor(o.response_logprobs)[m], ref[m], atol=1e-4)
            assert o.reward_score == pytest.approx(tree.root.reward or 0.0)
            assert o.extra_fields["reward_extra_info"] == {}
        assert all(n.policy_version == 7 for n in tree.nodes.values() if n.transcript)
    assert runs[0][0].root.score == 1.0, "the oracle tree (session 0) solves its task through the loop"
    if env_id == "Toy-v0":
        assert children > 0 and n_out > len(runs), "oracle trees delegate: child nodes have their own outputs"


@pytest.mark.parametrize("method", METHODS)
def test_estimator_equals_credit_node_by_node(toy_runs, method):
    mask, fields, uid, outs = batch_of(toy_runs)
    perm = list(range(len(outs)))
    random.Random(0).shuffle(perm)  # verl balances batches: row order is not tree order
    mask, uid = mask[perm], uid[perm]
    fields = {k: v[perm] for k, v in fields.items()}
    cfg = OmegaConf.create({"rao_envs": {"credit": method, "lam": 0.5}})
    adv, ret = compute_rao_outcome_advantage(torch.zeros(mask.shape), mask, index=uid, config=cfg, non_tensor_batch=fields)
    assert torch.equal(adv, ret) and adv.shape == mask.shape
    trees = [t for t, _, _, _ in toy_runs]
    ref = assign_credit(trees, method, lam=0.5)
    by_tree = {t.tree_id: i for i, t in enumerate(trees)}
    nonzero = 0
    for j in range(len(perm)):
        i, nid = by_tree[fields["rao_tree_id"][j]], fields["rao_node_id"][j]
        a, w = ref.advantage(i, nid), ref.weight(i, nid)
        want = 0.0 if a is None else a * w
        m = mask[j].bool()
        assert torch.allclose(adv[j][m], torch.full((int(m.sum()),), want), atol=1e-6), (method, nid)
        assert not adv[j][~m].any(), "context and padding tokens get no advantage"
        nonzero += want != 0.0
    assert nonzero > 0, "the oracle/model mix gives signal"
    assert ref.depth_weights and set(ref.depth_weights) == {0, 1}, "depth weights of both depths are in play"


def test_estimator_groups_by_uid_and_skips_missing_trees(toy_runs):
    mask, fields, uid, _ = batch_of(toy_runs)
    adv, credit, trees = rao_advantages(mask, fields, groups=uid)
    assert len(trees) == 4 and credit.group_keys == ["uid3", "uid3", "uid4", "uid4"]
    without = dict(fields)
    without["rao_tree"] = np.array([None] * len(uid), dtype=object)
    adv0, credit0, _ = rao_advantages(mask, without, groups=uid)
    assert not adv0.any() and len(credit0) == 0
    with pytest.raises(ConfigError, match="rao_sync"):
        compute_rao_outcome_advantage(torch.zeros(mask.shape), mask, index=uid)  # verl's stock step passes no fields
    with pytest.raises(ConfigError, match="rao_envs agent loop"):
        rao_advantages(mask, {})


class FailingServer(HFServer):
    """Raises, or hangs, for chosen requests (``PREFIX/NODE/TURN`` suffixes)."""

    raise_on: set[str] = set()
    hang_on: set[str] = set()

    async def generate(self, request_id, **kw):
        tail = request_id.split("/", 1)[1]
        if tail in self.raise_on:
            raise ConnectionError("replica went away")
        if tail in self.hang_on:
            await asyncio.sleep(30)
        return await super().generate(request_id, **kw)


@pytest.mark.parametrize(("how", "where"), [("raise", "0.0/0"), ("hang", "0.0/0"), ("raise", "0/1")],
                         ids=["child-raises", "child-times-out", "root-raises-later"])
def test_infra_failures_mark_and_mask_the_node(tiny, how, where):
    model, tok = tiny
    server = FailingServer(model, tok)
    server.raise_on, server.hang_on = ({where}, set()) if how == "raise" else (set(), {where})
    settings = {"max_turn_tokens": 24, "timeout_s": 0.5}
    runs = run_trees(tok, server, "Toy-v0", TOY, [3], 2, oracle=(0, 1), settings=settings)
    nid = where.split("/")[0]
    for tree, outs, loop, _ in runs:
        node = tree.nodes[nid]
        assert node.status is NodeStatus.INFRA_ERROR
        assert ("timed out" in node.error) if how == "hang" else ("replica went away" in node.error)
        check_outputs(tree, outs, loop.last_tokens)
        out = [o for o in outs if o.extra_fields["rao_node_id"] == nid]
        if where.endswith("/0"):  # it failed before its first token: nothing of it to train, no output
            assert not out
        else:  # it acted, then failed: its output is there, masked
            assert out[0].extra_fields["rao_masked"] and sum(out[0].response_mask) == 0
        assert tree.done
    mask, fields, uid, _ = batch_of(runs)
    adv, credit, _ = rao_advantages(mask, fields, groups=uid, drop_no_signal=False)
    for j in range(len(uid)):
        if fields["rao_node_id"][j] == nid:
            assert not adv[j].any()
    if nid == "0":  # a masked root drops its tree from the group: nothing is trained
        assert len(credit) == 0


def test_root_failing_at_once_and_overlong_prompt_give_one_inert_output(tiny):
    model, tok = tiny
    server = FailingServer(model, tok)
    server.raise_on = {"0/0"}
    [(tree, outs, _, _)] = run_trees(tok, server, "Toy-v0", TOY, [3], 1, oracle=())
    assert tree.root.status is NodeStatus.INFRA_ERROR and len(outs) == 1 and outs[0].response_mask == [0]
    [(tree, outs, _, _)] = run_trees(tok, HFServer(model, tok), "Toy-v0", TOY, [3], 1, oracle=(), prompt_length=16)
    assert "prompt_length" in tree.root.error and outs[0].extra_fields["rao_masked"]
    # response budget: a tiny response_length ends the node as infra_error, and no output exceeds it
    [(tree, outs, loop, _)] = run_trees(tok, HFServer(model, tok), "Toy-v0", TOY, [3], 1, oracle=(0,), response_length=40)
    assert all(len(o.response_ids) <= 40 for o in outs)
    check_outputs(tree, outs, loop.last_tokens)


def test_settings_validation():
    with pytest.raises(ConfigError, match="credit method"):
        RAOSettings.from_config(OmegaConf.create({"rao_envs": {"credit": "nope"}}))
    with pytest.raises(ConfigError, match="rao_envs config block"):
        RAOSettings.from_config(OmegaConf.create({"rao_envs": {"typo_field": 1}}))
    assert RAOSettings.from_config(OmegaConf.create({})).credit == "rao"


def test_row_without_task_is_a_config_error(tiny):
    model, tok = tiny

    async def go():
        loop = local_agent_loop(tok, HFServer(model, tok))
        await loop.run({}, extra_info={}, raw_prompt=[])

    with pytest.raises(ConfigError, match="verl-dataset"):
        asyncio.run(go())


def test_dataset_reads_with_verls_rlhf_dataset(tiny, tmp_path):
    from verl.utils.dataset.rl_dataset import RLHFDataset

    _, tok = tiny
    path = write_verl_dataset("Toy-v0", tmp_path / "train.parquet", n=6, seed_start=10, env_kwargs=TOY)
    cfg = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 4096, "filter_overlong_prompts": False,
                            "return_raw_chat": True, "truncation": "error", "apply_chat_template_kwargs": {}})
    ds = RLHFDataset(data_files=str(path), tokenizer=tok, config=cfg)
    assert len(ds) == 6
    item = ds[2]
    assert item["agent_name"] == AGENT_NAME
    assert item["extra_info"]["seed"] == 12 and item["extra_info"]["env_id"] == "Toy-v0"
    assert item["raw_prompt"] == verl_rows("Toy-v0", [12], env_kwargs=TOY)[0]["prompt"]
    # and the loop runs that exact item
    runs_kwargs = {k: v for k, v in item.items() if not isinstance(v, torch.Tensor)}

    async def go():
        loop = local_agent_loop(tok, HFServer(*tiny), rao_envs={"max_turn_tokens": 16})
        outs = await loop.run({"temperature": 1.0}, **runs_kwargs)
        return loop.last_tree, outs

    tree, outs = asyncio.run(go())
    assert tree.seed == 12 and tree.done and outs and math.isfinite(outs[0].response_logprobs[0])
