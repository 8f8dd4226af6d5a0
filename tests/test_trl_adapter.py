"""The TRL adapter on CPU with a tiny model built locally (no download): tree trainer, rollout_func, tool env, worker.

The tree trainer's checks go through what TRL's loss actually receives (``_compute_loss``
inputs): each row's advantage and weight against an independent ``assign_credit`` on the
same trees, its loss mask against the node's own recorded tokens, and its sampling logprobs
against the model's. Trees whose group index is even answer from the task's oracle
(:class:`tests.trl_support.OracleMix`) so a random model's batch has signal and children.
"""

from __future__ import annotations

import asyncio
import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from rao_envs.adapters.trl import (  # noqa: E402
    TRL_VERSION,
    HFGenerator,
    RAORolloutWorker,
    RootRolloutFunc,
    root_reward,
    tiny_model_and_tokenizer,
    tool_environment,
)
from rao_envs.credit import assign_credit  # noqa: E402
from rao_envs.registration import engine_factory  # noqa: E402
from tests.trl_support import OracleMix, RecordingTreeTrainer, check_generation, own_tokens  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOY = {"difficulty": "easy", "max_depth": 1, "max_steps_per_node": 3}
TEXTCRAFT = {"difficulty": "easy", "max_depth": 2, "max_steps_per_node": 3}


def delegating_seeds(env_id, env_kwargs, n=40):
    """Seeds whose oracle tree delegates and succeeds (the fixed task set has small easy tasks that need no child)."""
    engine = engine_factory(env_id, **env_kwargs)()
    out = []
    for seed in range(n):
        engine.reset(seed)
        oracle = engine.task.oracle()
        while not engine.done:
            engine.act(oracle(engine.observe(), engine.node_info()))
        if len(engine.tree.nodes) > 1 and engine.tree.root.score == 1.0:
            out.append(seed)
    return out
torch.set_num_threads(1)


def grpo_args(tmp_path, **kw) -> GRPOConfig:
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=2, max_completion_length=16,
                max_steps=2, learning_rate=1e-2, report_to="none", logging_steps=1, save_strategy="no", use_cpu=True,
                seed=0, dataloader_num_workers=0, bf16=False)
    return GRPOConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def tiny():
    """A tiny Qwen2 model and tokenizer trained on Toy and TextCraft oracle text (fresh copy per test)."""
    torch.manual_seed(0)
    model, tok = tiny_model_and_tokenizer(["Toy-v0", "TextCraft-v0"], env_kwargs={"difficulty": "easy"}, episodes=4)
    return model, tok


def test_pinned_version():
    import trl

    assert trl.__version__ == TRL_VERSION
    text = (REPO / "pyproject.toml").read_text()
    assert f'"trl=={TRL_VERSION}"' in text


@pytest.mark.parametrize(
    ("env_id", "env_kwargs", "mode", "lam", "steps"),
    [("Toy-v0", TOY, "node", None, 2), ("TextCraft-v0", TEXTCRAFT, "node", 0.5, 2), ("Toy-v0", TOY, "turn", 0.5, 1)],
    ids=["toy-node", "textcraft-node", "toy-turn"],
)
def test_tree_trainer_steps(tiny, tmp_path, env_id, env_kwargs, mode, lam, steps):
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    mix = OracleMix(env_id, tok, env_kwargs)
    seeds = delegating_seeds(env_id, env_kwargs) if env_id == "TextCraft-v0" else range(40)
    trainer = RecordingTreeTrainer(model, env_id, args=grpo_args(tmp_path, max_steps=steps), env_kwargs=env_kwargs, group_size=2, lam=lam,
                                   mode=mode, processing_class=tok, generator=mix, seeds=seeds)
    mix.model = HFGenerator.for_trainer(trainer)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer.train()

    assert len(trainer.generations) == len(trainer.loss_inputs) == steps
    assert all(math.isfinite(x) for x in trainer.losses) and any(x != 0.0 for x in trainer.losses)
    assert any(not torch.equal(before[k], v) for k, v in model.named_parameters()), "parameters must change"
    totals = {"rows": 0, "child_rows": 0, "nonzero": 0}
    for (trees, _, logps), inputs in zip(trainer.generations, trainer.loss_inputs):
        assert len(trees) == 4  # 2 tasks x group_size 2
        counts = check_generation(trees, inputs, method="rao", lam=lam, mode=mode)
        totals = {k: totals[k] + counts[k] for k in totals}
    assert totals["child_rows"] > 0, "children's rows must reach the loss, not only roots"
    assert totals["nonzero"] > 0

    # sampling logprobs: the model's own (recomputed on the rows with the weights that sampled them)
    trees, batch, logps = trainer.generations[0]
    sampled = batch["sampling_per_token_logps"]
    own = (batch["completion_mask"] * batch["tool_mask"]).bool() & ~torch.isnan(sampled)
    assert own.sum() > 0
    assert torch.allclose(sampled[own], logps[own], atol=1e-4), (sampled[own] - logps[own]).abs().max()

    logged = [h for h in trainer.state.log_history if "rao/rows" in h]
    assert logged and all(math.isfinite(h["loss"]) for h in logged)


def test_tree_trainer_any_credit_method(tiny, tmp_path):
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    mix = OracleMix("Toy-v0", tok, TOY)
    trainer = RecordingTreeTrainer(model, "Toy-v0", args=grpo_args(tmp_path, max_steps=1), env_kwargs=TOY, group_size=2,
                                   credit="depth_grpo", processing_class=tok, generator=mix, seeds=range(40),
                                   credit_kwargs={"drop_no_signal": False})
    mix.model = HFGenerator.for_trainer(trainer)
    trainer.train()
    trees, _, _ = trainer.generations[0]
    ref = assign_credit(trees, "depth_grpo", drop_no_signal=False)
    inputs = trainer.loss_inputs[0]
    for j, (ti, nid, _) in enumerate(inputs["rao_keys"]):
        if ti >= 0:
            assert math.isclose(float(inputs["rao_advantages"][j]), ref.advantage(ti, nid), abs_tol=1e-6)


def test_tree_trainer_misuse(tiny, tmp_path):
    from rao_envs.errors import ConfigError

    model, tok = tiny
    with pytest.raises(ConfigError, match="unknown credit method"):
        RecordingTreeTrainer(model, "Toy-v0", args=grpo_args(tmp_path), credit="nope", processing_class=tok)
    with pytest.raises(ConfigError, match="rewards are the task's verifiers"):
        RecordingTreeTrainer(model, "Toy-v0", args=grpo_args(tmp_path), reward_funcs=[root_reward], processing_class=tok)
    with pytest.raises(ConfigError, match="whole groups"):
        RecordingTreeTrainer(model, "Toy-v0", args=grpo_args(tmp_path), group_size=3, processing_class=tok)


def test_root_rollout_func_stock_grpo(tiny, tmp_path):
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    rollout = RootRolloutFunc("Toy-v0", env_kwargs=TOY)
    calls = []

    def recording(prompts, trainer):
        out = rollout(prompts, trainer)
        calls.append((len(prompts), out, list(rollout.last_trees)))
        return out

    trainer = GRPOTrainer(model, reward_funcs=[root_reward], args=grpo_args(tmp_path, scale_rewards="none"),
                          train_dataset=rollout.dataset(range(16)), processing_class=tok, rollout_func=recording)
    trainer.train()
    assert len(calls) == 2
    for n, out, trees in calls:
        assert n == 4 and all(len(out[k]) == n for k in ("prompt_ids", "completion_ids", "logprobs", "env_mask", "root_reward"))
        for i, tree in enumerate(trees):
            comp, mask = out["completion_ids"][i], out["env_mask"][i]
            assert len(comp) == len(mask) == len(out["logprobs"][i])
            assert [t for t, m in zip(comp, mask) if m] == own_tokens(tree, "0", -1), "env_mask covers the root's own tokens"
            assert out["root_reward"][i] == (tree.root.reward or 0.0)
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)


def test_tool_environment_methods_and_child_episode(tiny):
    model, tok = tiny
    kw = {**TOY, "max_steps_per_node": 6}
    Env = tool_environment("Toy-v0", env_kwargs=kw)
    mix = OracleMix("Toy-v0", tok, kw, pick=lambda info: True)  # children answer from the oracle
    Env.bind(generator=mix, tokenizer=tok)
    assert set(Env.tool_names) == {"calc", "delegate", "finish"}
    from transformers.utils import get_json_schema

    schema = {s["function"]["name"]: s["function"] for s in (get_json_schema(getattr(Env(), n)) for n in Env.tool_names)}
    assert schema["calc"]["parameters"]["properties"]["op"]["enum"] == ["+", "-", "*"]
    assert schema["delegate"]["parameters"]["required"] == ["goal", "expr"]

    from rao_envs.envs.toy import evaluate, parse, show

    def compound(seed):
        return not all(isinstance(x, int) for x in parse(Env._factory().reset(seed).root.args["expr"])[::2])

    env = Env()
    task = env.reset(seed=next(s for s in range(50) if compound(s)))
    assert "Compute the value of" in task
    expr = env.engine.tree.root.args["expr"]
    a, op, b = parse(expr)
    values = []
    for side in (a, b):
        if isinstance(side, int):
            values.append(side)
            continue
        text = env.delegate(goal=f"Compute {show(side)}", expr=show(side))  # the child runs its own episode
        assert "[sub-agent 0." in text and "finished]" in text
        values.append(int(text.split("finished] ")[1].split()[0]))
    assert env.engine.tree.nodes["0.0"].status.value == "finished" and env.children_runs >= 1
    out = env.calc(a=values[0], op=op, b=values[1])
    assert str(evaluate(parse(expr))) in out
    assert env.finish(result=str(evaluate(parse(expr)))) == "Finished."
    assert env.get_reward() == 1.0
    assert "over" in env.calc(a=1, op="+", b=2)


def test_tool_environment_stock_grpo(tmp_path):
    model, tok = tiny_model_and_tokenizer(["Toy-v0"], env_kwargs={"difficulty": "easy"}, template="qwen3", episodes=2)
    Env = tool_environment("Toy-v0", env_kwargs=TOY)
    args = grpo_args(tmp_path, max_tool_calling_iterations=2)
    trainer = GRPOTrainer(model, args=args, train_dataset=Env.dataset(range(16)), processing_class=tok,
                          environment_factory=Env)
    Env.bind(trainer)
    trainer.train()
    assert trainer.state.global_step == 2
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)
    assert any(f"rewards/{Env.__name__}/mean" in h for h in trainer.state.log_history)

    env = Env()  # a delegated child runs its own episode with the trainer's model, its chat rendered with the tools
    env.reset(seed=0)
    out = env.delegate(goal="Compute (3 + 4)", expr="(3 + 4)")
    child = env.engine.tree.nodes["0.0"]
    assert "sub-agent 0.0" in out and child.status.ended and child.steps_used >= 1
    first_prompt = tok.decode(child.transcript[1]["token_ids"])
    assert '"name": "calc"' in first_prompt and first_prompt.rstrip().endswith("<|im_start|>assistant")
    assert all("token_ids" in m for m in child.transcript if m["role"] == "assistant")


@pytest.fixture
def scripted_server():
    """tests/openai_server.py with vLLM-style token ids and logprobs, on a free port."""
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "openai_server.py"), "--env", "Toy-v0", "--token-ids",
                             "--kw", '{"difficulty": "easy", "max_depth": 1, "max_steps_per_node": 3}'],
                            stdout=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        port = int(proc.stdout.readline().split()[1])
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        from tests.procs import stop_process

        stop_process(proc)


def _check_samples(worker, samples):
    ref = assign_credit(worker.last_trees, "rao", drop_no_signal=False)
    rows = worker.last_rows
    assert len(samples) == len(rows) > 0
    by_tree = {t.tree_id: (i, t) for i, t in enumerate(worker.last_trees)}
    groups = {}
    for s, r in zip(samples, rows):
        ti, tree = by_tree[r["tree_id"]]
        n = len(s.input_ids)
        assert s.completion_mask.shape == s.old_log_probs.shape == (n,)
        assert s.input_ids.tolist() == r["prompt_ids"] + r["completion_ids"]
        assert s.input_ids[s.completion_mask.astype(bool)].tolist() == own_tokens(tree, r["node_id"], r["turn"])
        assert (s.old_log_probs[s.completion_mask == 0] == 0).all() and (s.old_log_probs[s.completion_mask == 1] < 0).all()
        adv, w = ref.advantage(ti, r["node_id"]), ref.weight(ti, r["node_id"])
        assert math.isclose(s.metrics["rao/advantage"], adv, abs_tol=1e-9) and math.isclose(s.metrics["rao/weight"], w)
        assert math.isclose(s.advantage, adv * w, abs_tol=1e-9)
        assert s.model_version == 3
        groups.setdefault(r["task_id"], set()).add(s.group_id)
    assert all(len(g) == 1 for g in groups.values()) and len({next(iter(g)) for g in groups.values()}) == len(groups)
    assert any(r["node_id"] != "0" for r in rows)


def test_async_worker_against_local_server(scripted_server):
    worker = RAORolloutWorker("Toy-v0", base_url=scripted_server, model="scripted", seeds=range(100, 200), tasks_per_batch=2,
                              group_size=2, env_kwargs=TOY, credit_kwargs={"drop_no_signal": False}, concurrency=8,
                              policy_kwargs={"timeout": 30, "retries": 1})
    worker.update_model_version(3)
    samples, metrics = asyncio.run(worker.next_batch())
    _check_samples(worker, samples)
    assert metrics["rao/root_success"] == 1.0 and metrics["rao/rows_without_logprobs"] == 0

    worker.start()  # the protocol's thread: samples arrive on rollout_buffer
    try:
        first = worker.rollout_buffer.get(timeout=60)
        assert first.input_ids.dtype.kind == "i" and first.group_id >= 0
        worker.check_health(stale_after_s=120)
    finally:
        worker.stop()
    assert not worker.metrics_queue.empty()


def test_async_worker_advantages_with_signal(tiny):
    """A policy that is wrong on odd trees: non-zero advantages in the samples equal credit, node by node."""
    model, tok = tiny
    from rao_envs.policies import Completion, OraclePolicy
    from rao_envs.registration import engine_factory

    task = engine_factory("Toy-v0", **TOY)().task
    oracle = OraclePolicy(task.oracle)

    async def policy(messages, info):
        text = '<tool>{"name": "finish", "args": {"result": 12345}}</tool>' if info["group"] % 2 else await oracle(messages, info)
        ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        return Completion(text, ids, [-0.5] * len(ids))  # ids and logprobs, no prompt ids: prompts rendered by tok

    worker = RAORolloutWorker("Toy-v0", policy=policy, tokenizer=tok, seeds=range(5), tasks_per_batch=2, group_size=2,
                              env_kwargs=TOY)
    worker.update_model_version(3)
    samples, _ = asyncio.run(worker.next_batch())
    ref = assign_credit(worker.last_trees, "rao")
    assert len(samples) == len(worker.last_rows) > 0
    assert any(s.advantage != 0.0 for s in samples)
    by_tree = {t.tree_id: i for i, t in enumerate(worker.last_trees)}
    for s, r in zip(samples, worker.last_rows):
        i = by_tree[r["tree_id"]]
        assert math.isclose(s.advantage, ref.advantage(i, r["node_id"]) * ref.weight(i, r["node_id"]), abs_tol=1e-9)
        assert s.input_ids[s.completion_mask.astype(bool)].tolist() == own_tokens(worker.last_trees[i], r["node_id"], -1)


def test_demos_cli_rows_train_assistant_tokens_only(tiny, tmp_path):
    out = tmp_path / "demos.parquet"
    proc = subprocess.run([sys.executable, "-m", "rao_envs.cli", "demos", "Toy-v0", "-n", "3", "--out", str(out),
                           "--kw", "difficulty=easy", "max_depth=1"], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    import datasets
    from trl import SFTConfig, SFTTrainer

    ds = datasets.Dataset.from_parquet(str(out))
    assert set(ds.column_names) >= {"messages", "env_id", "seed", "node_id", "depth", "protocol"}
    assert len(ds) > 3 and any(d > 0 for d in ds["depth"]), "one row per node, children included"
    assert all(m[-1]["role"] == "assistant" for m in ds["messages"])
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    trainer = SFTTrainer(model=model, args=SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=1, report_to="none",
                                                     assistant_only_loss=True, use_cpu=True, save_strategy="no",
                                                     per_device_train_batch_size=2, bf16=False),
                         train_dataset=ds, processing_class=tok)
    row = trainer.train_dataset[0]
    targets = [t for t, lab in zip(row["input_ids"], row["labels"]) if lab != -100]
    want = ds[0]["messages"]
    expect = [t for m in want if m["role"] == "assistant" for t in tok(m["content"] + "<|im_end|>", add_special_tokens=False)["input_ids"]]
    assert targets == expect, "only the node's own assistant turns (and their end token) are SFT targets"
    trainer.train()


def test_readme_train_with_trl_runs_as_written(tmp_path, monkeypatch, capsys):
    import re

    text = (REPO / "README.md").read_text()
    section = text[text.index("## Train with TRL"):]
    block = re.search(r"```py\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    assert "rows;" in capsys.readouterr().out


def test_gpu_benchmark_cpu_dry_run(tmp_path):
    """benchmarks/gpu_trl.py runs (numbers are meaningless on CPU; the GPU run is benchmarks/gpu_trl.sh)."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_trl.py"), "--model", "local", "--allow-cpu",
                           "--steps", "1", "--num-tasks", "1", "--group-size", "2", "--hidden", "32", "--layers", "1",
                           "--env-id", "Toy-v0", "--max-new-tokens", "8", "--json", str(tmp_path / "r.json")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "gen tok/s" in proc.stdout and "baseline (same run)" in proc.stdout
    import json

    assert json.loads((tmp_path / "r.json").read_text())["steps"][0]["rows"] > 0


def test_shared_prefix_generation_equals_plain(tiny):
    """share_prefix runs the system prompt once per batch: same tokens, same logprobs as plain left-padded batches."""
    import rao_envs
    from rao_envs.adapters.trl import ChatTokens, HFGenerator, Request, _common_prefix

    model, tok = tiny
    engine = rao_envs.make_engine("Toy-v0", difficulty="easy")
    chat = ChatTokens(tok)
    reqs = []
    for seed in range(4):
        engine.reset(seed)
        reqs.append(Request(chat.prompt(("t", seed), [{"role": "system", "content": engine.system_prompt},
                                                    {"role": "user", "content": engine.observe()}]), [], {}))
    assert _common_prefix([r.prompt_ids for r in reqs]) >= 32
    assert _common_prefix([[1, 2, 3], [1, 2, 3]]) == 2 and _common_prefix([[1], [2]]) == 0
    for sample in (False, True):
        torch.manual_seed(0)
        plain = HFGenerator(model, tok, max_new_tokens=12, do_sample=sample)(reqs)
        torch.manual_seed(0)
        shared = HFGenerator(model, tok, max_new_tokens=12, do_sample=sample, share_prefix=32)(reqs)
        assert [g.token_ids for g in plain] == [g.token_ids for g in shared]
        for a, b in zip(plain, shared):
            assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-4
