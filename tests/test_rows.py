"""Training rows (rao_envs.rows): token spans, loss masks, credit columns, datasets/Parquet round trip."""

from __future__ import annotations

import asyncio

import pytest

import rao_envs
from rao_envs.credit import assign_credit
from rao_envs.errors import ConfigError
from rao_envs.policies import Completion, OraclePolicy
from rao_envs.rollout import rollout, run_sync
from rao_envs.rows import rows_from_trees, read_parquet, to_dataset, write_parquet
from rao_envs.types import NodeStatus

IM_START, IM_END = 100_001, 100_002


class ChatMLTokenizer:
    """A tiny ChatML tokenizer: one id per character, two special tokens (HF-compatible call)."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def apply_chat_template(self, conversation, tokenize=True, add_generation_prompt=False, **kw):
        ids: list[int] = []
        for m in conversation:
            ids += [IM_START] + self.encode(f"{m['role']}\n{m['content']}") + [IM_END] + self.encode("\n")
        if add_generation_prompt:
            ids += [IM_START] + self.encode("assistant\n")
        return ids

    def decode(self, ids: list[int]) -> str:
        return "".join({IM_START: "<s>", IM_END: "</s>"}.get(i, chr(i)) for i in ids)


def oracle_trees(env="Toy-v0", seeds=(0, 1), **kw):
    out = []
    for s in seeds:
        eng = rao_envs.make_engine(env, **kw)
        out.append(run_sync(eng, eng.task.oracle(), seed=s))
    return out


def test_node_rows_mask_only_own_assistant_tokens():
    tok = ChatMLTokenizer()
    tree = oracle_trees(difficulty="hard", seeds=(2,))[0]
    rows = tree.to_rows(tok)
    assert len(rows) == sum(1 for n in tree.nodes.values() if n.steps_used)
    for row in rows:
        node = tree.nodes[row["node_id"]]
        full = row["prompt_ids"] + row["completion_ids"]
        plain = [{"role": m["role"], "content": m["content"]} for m in node.transcript]
        last_a = max(i for i, m in enumerate(plain) if m["role"] == "assistant")
        assert full == tok.apply_chat_template(plain[: last_a + 1])  # same tokens as the whole chat
        assert len(row["loss_mask"]) == len(row["completion_ids"]) == len(row["logprobs"])
        trained = tok.decode([t for t, m in zip(row["completion_ids"], row["loss_mask"]) if m])
        own = "".join(m["content"] + "</s>\n" for m in plain if m["role"] == "assistant")
        assert trained == own  # exactly the node's own turns (with their end-of-turn tokens)
        assert tok.decode(row["prompt_ids"]).endswith("<s>assistant\n")
        assert row["depth"] == node.depth and row["task_id"].startswith("Toy-v0:2") and row["turn"] == -1
        assert row["token_source"] == "tokenizer"


def test_turn_rows_hold_the_same_tokens():
    tok = ChatMLTokenizer()
    tree = oracle_trees(difficulty="medium", seeds=(1,))[0]
    by_node = {r["node_id"]: r for r in tree.to_rows(tok)}
    turns = tree.to_rows(tok, mode="turn")
    assert len(turns) == sum(n.steps_used for n in tree.nodes.values())
    for r in turns:
        node_row = by_node[r["node_id"]]
        seq = node_row["prompt_ids"] + node_row["completion_ids"]
        assert seq[: len(r["prompt_ids"]) + len(r["completion_ids"])] == r["prompt_ids"] + r["completion_ids"]
        assert all(r["loss_mask"])
    with pytest.raises(ConfigError, match="mode"):
        tree.to_rows(tok, mode="episode")


def test_rows_need_ids_or_a_tokenizer():
    tree = oracle_trees(seeds=(0,))[0]
    with pytest.raises(ConfigError, match="tokenizer="):
        tree.to_rows()


def test_recorded_ids_are_used_verbatim():
    """A policy that reports token ids and prompt ids (like vLLM): rows need no tokenizer."""
    tok = ChatMLTokenizer()
    eng = rao_envs.make_engine("Toy-v0", difficulty="medium")
    oracle = OraclePolicy(lambda: eng.task.oracle())

    async def policy(messages, info):
        text = await oracle(messages, info)
        prompt = tok.apply_chat_template(messages, add_generation_prompt=True)
        ids = tok.encode(text) + [IM_END]  # the sampled tokens, stop token included
        return Completion(text, ids, [-0.5] * len(ids), prompt)

    trees = asyncio.run(rollout("Toy-v0", policy, [0, 1], group_size=2, env_kwargs={"difficulty": "medium"}, policy_version=7))
    rows = rows_from_trees(trees, drop_no_signal=False)
    assert rows and all(r["token_source"] == "recorded" for r in rows)
    for r in rows:
        tree = next(t for t in trees if t.tree_id == r["tree_id"])
        node = tree.nodes[r["node_id"]]
        lps = [lp for lp, m in zip(r["logprobs"], r["loss_mask"]) if m]
        assert lps == [-0.5] * sum(r["loss_mask"])
        assert [lp for lp, m in zip(r["logprobs"], r["loss_mask"]) if not m] == [None] * (len(r["loss_mask"]) - len(lps))
        own = [t for t, m in zip(r["completion_ids"], r["loss_mask"]) if m]
        want = [t for msg in node.transcript if msg["role"] == "assistant" for t in msg["token_ids"]]
        assert own == want
        assert r["policy_version"] == 7 and r["weight"] is not None


def test_credit_columns_and_masking():
    tok = ChatMLTokenizer()
    trees = oracle_trees(difficulty="medium", seeds=(0, 0, 0))
    # tree 1: pretend a child failed for infrastructure reasons; tree 2: root failed entirely
    child = next(n for n in trees[1].nodes.values() if n.depth == 1)
    child.status, child.score, child.reward = NodeStatus.INFRA_ERROR, None, None
    trees[2].root.status = NodeStatus.INFRA_ERROR
    trees[0].root.score = 0.0
    credit = assign_credit(trees)
    rows = rows_from_trees(trees, tok, credit=credit)
    ids = {(r["tree_id"].rsplit("#", 1)[1], r["node_id"]) for r in rows}
    assert ("1", child.id) not in ids and not any(t == "2" for t, _ in ids)
    assert not any(n.startswith(child.id + ".") for t, n in ids if t == "1")
    for r in rows:
        i = int(r["tree_id"].rsplit("#", 1)[1])
        assert r["advantage"] == pytest.approx(credit.advantage(i, r["node_id"]))
        assert r["weight"] == pytest.approx(credit.weight(i, r["node_id"]))


def test_round_trip_datasets_and_parquet(tmp_path):
    tok = ChatMLTokenizer()
    trees = oracle_trees(difficulty="medium", seeds=(0, 0))
    trees[0].root.score = 0.0  # give the group a signal
    rows = rows_from_trees(trees, tok) + rows_from_trees(trees, tok, mode="turn")
    rows[0]["logprobs"][0] = -1.25
    ds = to_dataset(rows)
    assert len(ds) == len(rows)
    assert ds.to_list() == [{k: r[k] for k in ds.column_names} for r in rows]
    path = write_parquet(rows, tmp_path / "rows.parquet")
    back = read_parquet(path)
    assert back == [{k: r[k] for k in back[0]} for r in rows]
    import datasets

    again = datasets.Dataset.from_parquet(str(path))
    assert again.to_list() == back


def test_zero_rows_after_no_signal_dropping_warns_with_the_fix():
    trees = oracle_trees(seeds=(0, 0))  # one task, two trees the oracle solves: equal rewards, no signal
    with pytest.warns(UserWarning, match="drop_no_signal=False"):
        assert rows_from_trees(trees, ChatMLTokenizer()) == []
    assert rows_from_trees(trees, ChatMLTokenizer(), drop_no_signal=False)
