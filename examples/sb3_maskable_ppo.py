# Stock Stable-Baselines3 on the discrete view of TextCraft-Synth: sb3-contrib's MaskablePPO, trained on medium
# tasks, evaluated greedily on the first val tasks of hard and extreme. No glue: `make_vec_env` on the registered id
# and the env's own `action_masks()`, the discrete view's default rewards and tree-size cap. Prints success and the
# mean tree size next to the delegating oracle's (its rule as a discrete policy, on the same tasks).
#
#   python examples/sb3_maskable_ppo.py                 # 1-2 min of training, 1-2 min of evaluation, 1 CPU core
#   python examples/sb3_maskable_ppo.py --tiny          # smoke run: a few thousand steps, 4 eval tasks
#   tensorboard --logdir runs                           # SB3's rollout/... and train/...
import json
import os
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import tyro
from sb3_contrib import MaskablePPO
from stable_baselines3.common.env_util import make_vec_env

import rao_envs  # noqa: F401  (registers rao_envs/TextCraftDiscrete-v0)
from rao_envs.envs.textcraft import TextCraftSynth
from rao_envs.envs.textcraft.discrete import rule_policy


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment"""
    env_id: str = "rao_envs/TextCraftDiscrete-v0"
    """the registered discrete view"""
    difficulty: str = "medium"
    """the training difficulty (the paper trains on medium only)"""
    delegate: bool = True
    """allow the delegate actions (`--no-delegate`: the flat baseline)"""
    total_timesteps: int = 100_000
    """env steps of training"""
    num_envs: int = 8
    """parallel envs (`make_vec_env`, DummyVecEnv)"""
    n_steps: int = 256
    """steps per env per rollout (SB3's `n_steps`)"""
    batch_size: int = 256
    """SB3's minibatch size"""
    n_epochs: int = 4
    """SB3's epochs per rollout"""
    learning_rate: float = 1e-3
    """Adam learning rate"""
    gamma: float = 0.99
    """discount per env step (SB3's default)"""
    ent_coef: float = 0.01
    """entropy bonus"""
    net_arch: tuple[int, ...] = (64, 64)
    """hidden layers of the policy and value networks"""
    threads: int = 1
    """torch CPU threads (the network is tiny: 1 is fastest)"""
    eval_difficulties: tuple[str, ...] = ("hard", "extreme")
    """difficulties evaluated on the val split"""
    eval_tasks: int = 20
    """the first this-many val tasks of each difficulty (task_index 0..n-1)"""
    extreme_tasks: int = 10
    """the first this-many val tasks of extreme (its trees hold ~1,000 nodes and ~15k steps each)"""
    oracle: bool = True
    """also run the delegating oracle's rule on the same val tasks, for the tree-size ratio"""
    log_dir: str = "runs"
    """where SB3's TensorBoard event files go"""
    results_json: str | None = None
    """write the results here"""
    save_model: bool = False
    """save the trained model (SB3's zip) into `log_dir`"""
    tiny: bool = False
    """smoke run: 4,096 env steps, 2 envs, 4 eval tasks, hard only"""


def env_kwargs(args: Args, difficulty: str, split: str) -> dict:
    """The discrete view's keyword arguments: everything else stays at its defaults."""
    # the depth each difficulty's delegating oracle needs: the paper's 6, extreme 7
    return dict(difficulty=difficulty, split=split, delegate=args.delegate, max_depth=TextCraftSynth.max_depth_for(difficulty))


def rollout_batch(envs: list, act, seeds=None) -> list[dict]:
    """Run every env's episode to its end, one batched `act(obs, masks) -> actions` call per step.

    Env i plays `seeds[i]` (default i: val task i of the difficulty); returns success and tree size per env."""
    seeds = range(len(envs)) if seeds is None else seeds
    obs, masks, ends = [None] * len(envs), [None] * len(envs), [None] * len(envs)
    for i, (env, seed) in enumerate(zip(envs, seeds)):
        obs[i], info = env.reset(seed=seed)
        masks[i] = info["action_mask"].astype(bool)
    live = list(range(len(envs)))
    while live:
        actions = act(np.stack([obs[i] for i in live]), np.stack([masks[i] for i in live]))
        still = []
        for i, a in zip(live, actions):
            obs[i], _, term, trunc, info = envs[i].step(int(a))
            masks[i] = info["action_mask"].astype(bool)
            if term or trunc:
                ends[i] = {"success": info["root_score"] == 1.0, "nodes": info["nodes"]}
            else:
                still.append(i)
        live = still
    return ends


def rule_actor(env):
    """The delegating oracle's rule (`rule_policy`) as a batched `act(obs, masks) -> actions`."""
    rule = rule_policy(env)
    return lambda obs, masks: [rule(o, {"action_mask": m}) for o, m in zip(obs, masks)]


def evaluate(model: MaskablePPO | None, args: Args, difficulty: str) -> dict:
    """Greedy policy (or, with `model=None`, the oracle's rule) on the first `eval_tasks` val tasks."""
    n = args.extreme_tasks if difficulty == "extreme" else args.eval_tasks
    envs = [gym.make(args.env_id, **env_kwargs(args, difficulty, "val")) for _ in range(n)]
    if model is None:
        act = rule_actor(envs[0].unwrapped)
    else:
        act = lambda obs, masks: model.predict(obs, action_masks=masks, deterministic=True)[0]  # noqa: E731
    ends = rollout_batch(envs, act)
    return {"success": float(np.mean([e["success"] for e in ends])), "nodes": float(np.mean([e["nodes"] for e in ends])), "tasks": n}


def main(args: Args) -> dict:
    """Train MaskablePPO on medium, evaluate on the val tasks; return the results."""
    if args.tiny:
        args.total_timesteps, args.num_envs, args.n_steps, args.batch_size = 4096, 2, 256, 256
        args.eval_tasks, args.extreme_tasks, args.eval_difficulties = 4, 1, ("hard",)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    vec = make_vec_env(args.env_id, n_envs=args.num_envs, seed=args.seed, env_kwargs=env_kwargs(args, args.difficulty, "train"))
    model = MaskablePPO(
        "MlpPolicy", vec, n_steps=args.n_steps, batch_size=args.batch_size, n_epochs=args.n_epochs,
        learning_rate=args.learning_rate, gamma=args.gamma, ent_coef=args.ent_coef, seed=args.seed, device="cpu",
        policy_kwargs={"net_arch": list(args.net_arch)}, tensorboard_log=args.log_dir, verbose=0,
    )
    model.learn(total_timesteps=args.total_timesteps, tb_log_name=f"{args.exp_name}__{args.seed}")
    train_s = time.time() - t0
    vec.close()
    if args.save_model:
        model.save(f"{args.log_dir}/{args.exp_name}__{args.seed}.zip")
    result: dict = {"seed": args.seed, "delegate": args.delegate, "train_steps": int(model.num_timesteps), "train_s": train_s, "eval": {}}
    for d in args.eval_difficulties:
        learned = evaluate(model, args, d)
        result["eval"][d] = {"success": learned["success"], "nodes": learned["nodes"], "tasks": learned["tasks"]}
        line = f"{d:>8} val (first {learned['tasks']} tasks): success {learned['success']:.0%}, mean tree {learned['nodes']:.1f} nodes"
        if args.oracle:
            oracle = evaluate(None, args, d)
            result["eval"][d].update(oracle_success=oracle["success"], oracle_nodes=oracle["nodes"])
            line += (f" (oracle: success {oracle['success']:.0%}, mean tree {oracle['nodes']:.1f} nodes;"
                     f" ratio {learned['nodes'] / oracle['nodes']:.2f}x)")
        print(line, flush=True)
    result["wall_s"] = time.time() - t0
    if args.results_json:
        with open(args.results_json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    out = main(tyro.cli(Args))
    print(json.dumps({"eval": out["eval"], "train_steps": out["train_steps"], "wall_s": round(out["wall_s"], 1)}))
