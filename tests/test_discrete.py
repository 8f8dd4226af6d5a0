"""Discrete view (issue 6): spaces, masks, real delegation in the engine, check_env, scripted rule."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from rao_envs.errors import ConfigError, ResetNeededError
from rao_envs.envs.textcraft.discrete import rule_policy
from rao_envs.views.discrete import DiscreteRaoEnv


def run(env, policy, seed):
    obs, info = env.reset(seed=seed)
    steps = 0
    while True:
        obs, r, term, trunc, info = env.step(policy(obs, info))
        steps += 1
        assert env.observation_space.contains(obs)
        if term or trunc:
            return info, steps


@pytest.mark.parametrize("delegate", [True, False])
def test_check_env_no_warnings(delegate):
    env = gym.make("rao_envs/TextCraftDiscrete-v0", difficulty="medium", delegate=delegate)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=True)


def test_flat_variant_has_no_delegate_actions():
    flat = DiscreteRaoEnv("TextCraft-v0", delegate=False)
    deleg = DiscreteRaoEnv("TextCraft-v0")
    assert not any(n.startswith("delegate") for n in flat.action_names)
    assert "delegate_all" in deleg.action_names and deleg.action_space.n > flat.action_space.n
    assert flat.observation_space == deleg.observation_space


def test_mask_and_delegation_open_real_children():
    env = DiscreteRaoEnv("TextCraft-v0", difficulty="hard", split="val")
    obs, info = env.reset(seed=3)
    mask = info["action_mask"]
    assert mask.dtype == np.int8 and mask.shape == (env.action_space.n,)
    assert env.action_masks().dtype == bool
    i_all = env.action_names.index("delegate_all")
    assert mask[i_all] == 1  # a hard root can delegate
    obs, r, term, trunc, info = env.step(i_all)
    tree = env.tree
    assert len(tree.root.children) >= 1 and info["node"] == tree.root.children[0]
    assert info["depth"] == 1 and tree.nodes[info["node"]].parent == "0"


def test_inadmissible_action_costs_a_step():
    env = DiscreteRaoEnv("TextCraft-v0", difficulty="easy")
    obs, info = env.reset(seed=0)
    bad = int(np.flatnonzero(info["action_mask"] == 0)[0])
    obs, r, term, trunc, info = env.step(bad)
    assert info["invalid_action"] and env.tree.root.steps_used == 1
    assert env.tree.root.transcript[-1]["content"].startswith("Error") or not term


def test_rule_policy_solves_hard_and_flat_cannot():
    deleg = DiscreteRaoEnv("TextCraft-v0", difficulty="hard", split="val", max_depth=6)
    flat = DiscreteRaoEnv("TextCraft-v0", difficulty="hard", split="val", delegate=False)
    for seed in range(3):
        info, _ = run(deleg, rule_policy(deleg), seed)
        assert info["root_score"] == 1.0 and info["nodes"] > 1
        info, steps = run(flat, rule_policy(flat), seed)
        assert info["root_score"] == 0.0 and steps <= 25


def test_same_seed_same_actions_same_tree():
    env = DiscreteRaoEnv("TextCraft-v0", difficulty="medium")
    a, _ = run(env, rule_policy(env), 7)
    t1 = env.tree.to_json()
    run(env, rule_policy(env), 7)
    assert env.tree.to_json() == t1


def test_reward_modes_and_errors():
    with pytest.raises(ConfigError):
        DiscreteRaoEnv("TextCraft-v0", reward_mode="bogus")
    with pytest.raises(ConfigError):
        DiscreteRaoEnv("Toy-v0")  # no adapter for Toy
    env = DiscreteRaoEnv("TextCraft-v0", difficulty="easy", reward_mode="own", lam=0.5)
    with pytest.raises(ResetNeededError):
        env.step(0)
    info, _ = run(env, rule_policy(env), 1)
    assert info["node_done"] and info["acted"] == "0" and info["node_reward"] == 1.0


def test_delegate_all_only_variant_and_depth_free_observation():
    env = DiscreteRaoEnv("TextCraft-v0", difficulty="hard", split="val")  # delegate_each=False is the default
    full = DiscreteRaoEnv("TextCraft-v0", difficulty="hard", split="val", delegate_each=True)
    assert [n for n in env.action_names if n.startswith("delegate")] == ["delegate_all"]
    assert "delegate_0" in full.action_names
    assert env.observation_space == full.observation_space
    assert not any("depth" in n for n in env.feature_names)  # nothing a medium-trained policy could key on
    info, _ = run(env, rule_policy(env), 0)
    assert info["root_score"] == 1.0 and info["nodes"] > 1


def test_sb3_action_masker_and_maskable_ppo_need_no_glue():
    """`ActionMasker(gym.make(id), lambda e: e.action_masks())` and MaskablePPO on make_vec_env work as written."""
    sb3_contrib = pytest.importorskip("sb3_contrib")
    from sb3_contrib.common.wrappers import ActionMasker
    from stable_baselines3.common.env_util import make_vec_env

    env = ActionMasker(gym.make("rao_envs/TextCraftDiscrete-v0", difficulty="easy"), lambda e: e.action_masks())
    env.reset(seed=0)
    assert env.action_masks().dtype == bool or env.action_masks().dtype.kind in "iub"
    vec = make_vec_env("rao_envs/TextCraftDiscrete-v0", n_envs=2, seed=0, env_kwargs={"difficulty": "easy"})
    model = sb3_contrib.MaskablePPO("MlpPolicy", vec, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=64)
    assert model.num_timesteps >= 64
    vec.close()


def _episode_return(env, policy, seed):
    obs, info = env.reset(seed=seed)
    total, delegations = 0.0, 0
    while True:
        a = policy(obs, info)
        delegations += env.action_names[a].startswith("delegate")
        obs, r, term, trunc, info = env.step(a)
        total += r
        if term or trunc:
            return total, delegations, info


def test_default_tree_reward_pays_no_parent_for_its_children():
    """Default `reward_mode="tree"`: the episode returns root score - delegate_cost per delegating turn - fail_cost
    per failed sub-agent, however many children succeed (`own` and `node` pay a stream for every child's success)."""
    env = DiscreteRaoEnv("TextCraft-v0", difficulty="hard", split="val")
    assert env.reward_mode == "tree" and env.delegate_cost == 0.05 and env.fail_cost == 0.5
    total, delegations, info = _episode_return(env, rule_policy(env), 0)
    assert info["root_score"] == 1.0 and info["nodes"] > 10 and delegations > 5
    assert total == pytest.approx(1.0 - 0.05 * delegations)
    own = DiscreteRaoEnv("TextCraft-v0", difficulty="hard", split="val", reward_mode="own", delegate_cost=0.0)
    total_own, _, info = _episode_return(own, rule_policy(own), 0)
    assert total_own == pytest.approx(info["nodes"])  # every node's own success: the stream pays for spawning
    # a sub-agent that fails costs fail_cost when it ends: children that finish at once fail their targets
    cheap = DiscreteRaoEnv("TextCraft-v0", difficulty="hard", split="val", fail_cost=0.5, delegate_cost=0.0)
    i_all = cheap.action_names.index("delegate_all")
    obs, info = cheap.reset(seed=0)
    obs, r, *_ = cheap.step(i_all)
    kids = len(cheap.tree.root.children)
    rewards = []
    for _ in range(kids):  # each child finishes at once, without its items
        obs, r, term, trunc, info = cheap.step(0)
        rewards.append(r)
    assert rewards == [-0.5] * kids


def test_tree_size_cap_fits_the_difficulty_and_yields_to_the_caller():
    sizes = {d: DiscreteRaoEnv("TextCraft-v0", difficulty=d).engine.limits.max_nodes for d in ("easy", "medium", "hard", "extreme")}
    assert sizes == {"easy": 16, "medium": 64, "hard": 512, "extreme": 8192}
    assert DiscreteRaoEnv("TextCraft-v0", difficulty="medium", max_nodes=100).engine.limits.max_nodes == 100
    # an untrained policy (uniform over the admissible actions, delegating whenever it may) ends within the cap
    env = DiscreteRaoEnv("TextCraft-v0", difficulty="medium")
    rng = np.random.default_rng(0)
    i_all = env.action_names.index("delegate_all")
    for seed in range(5):
        obs, info = env.reset(seed=seed)
        steps = 0
        while True:
            mask = info["action_mask"]
            a = i_all if mask[i_all] else int(rng.choice(np.flatnonzero(mask[1:]) + 1))  # never finish early
            obs, r, term, trunc, info = env.step(a)
            steps += 1
            if term or trunc:
                break
        assert info["nodes"] <= 64 and steps <= 64 * 25


def test_action_masks_through_gymnasium_wrappers_and_sb3_vec_envs():
    sb3_contrib = pytest.importorskip("sb3_contrib")
    from sb3_contrib.common.maskable.utils import get_action_masks
    from sb3_contrib.common.wrappers import ActionMasker
    from stable_baselines3.common.env_util import make_vec_env

    raw = gym.make("rao_envs/TextCraftDiscrete-v0", difficulty="hard")
    wrapped = ActionMasker(raw, lambda e: e.action_masks())
    _, info = wrapped.reset(seed=0)
    assert np.array_equal(wrapped.action_masks(), info["action_mask"].astype(bool))
    # below another wrapper the method is reached the Gymnasium 1.x way (get_wrapper_attr), as SB3's vec envs do
    stats = gym.wrappers.RecordEpisodeStatistics(gym.make("rao_envs/TextCraftDiscrete-v0", difficulty="hard"))
    masker = ActionMasker(stats, lambda e: e.get_wrapper_attr("action_masks")())
    _, info = masker.reset(seed=0)
    assert np.array_equal(masker.action_masks(), info["action_mask"].astype(bool))
    vec = make_vec_env("rao_envs/TextCraftDiscrete-v0", n_envs=2, seed=0, env_kwargs={"difficulty": "hard"})
    vec.reset()
    masks = get_action_masks(vec)
    assert masks.shape == (2, vec.action_space.n) and masks.dtype == bool and masks.any(axis=1).all()
    assert sb3_contrib.common.maskable.utils.is_masking_supported(vec)
    vec.close()
