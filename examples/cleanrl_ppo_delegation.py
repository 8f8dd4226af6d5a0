# CleanRL-style single-file PPO (docs: https://docs.cleanrl.dev/rl-algorithms/ppo/) on the discrete view of
# TextCraft-Synth: a masked-categorical policy learns *when to delegate* on recipes of medium depth and is
# evaluated on easy/medium/hard/extreme val targets. `--no-delegate` removes the delegate actions (flat baseline,
# same 25-step budget per node).
#
#   python examples/cleanrl_ppo_delegation.py                      # delegating policy, ~1-1.5 min on 1 CPU core
#   python examples/cleanrl_ppo_delegation.py --no-delegate        # flat baseline
#   tensorboard --logdir runs                                      # charts/... and losses/...
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
import tyro
from torch.distributions.categorical import Categorical
from torch.utils.tensorboard import SummaryWriter

from rao_envs.views.discrete import DiscreteRaoEnv

DIFFICULTIES = ("easy", "medium", "hard", "extreme")


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = False
    """if toggled, cuda will be enabled by default"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases"""
    wandb_project_name: str = "rao_envs"
    """the wandb's project name"""
    wandb_entity: str | None = None
    """the entity (team) of wandb's project"""
    log_dir: str = "runs"
    """where the TensorBoard event files go"""
    threads: int = 1
    """torch CPU threads (the network is tiny: 1 thread is fastest, and leaves cores to parallel runs)"""

    # Environment specific arguments
    env_id: str = "TextCraft-v0"
    """the task id (a task with a discrete adapter)"""
    difficulty: str = "medium"
    """the training difficulty (the paper trains on medium only)"""
    delegate: bool = True
    """allow the delegate actions (`--no-delegate`: the flat baseline)"""
    delegate_each: bool = False
    """also offer `delegate_k` (one child for one ingredient) besides `delegate_all`; off by default: with it, the
    policy learns medium's "delegate one ingredient, craft the rest", which runs out of steps on hard"""
    max_depth: int = 6
    """deepest node of a tree while training and evaluating easy/medium/hard (the paper's limit)"""
    extreme_max_depth: int | None = None
    """max_depth for extreme (default: the task's recommendation for its delegating oracle)"""
    max_steps_per_node: int = 25
    """steps each node may take (the paper's limit)"""
    credit: str = "node"
    """`node` (RAO): one trajectory per tree node, each with its own local reward, GAE per node;
    `stream`: classic PPO over the env's single stream of steps with the env reward (`reward_mode`)"""
    reward_mode: str = "own"
    """env reward (used by `--credit stream`): `own` (the acting node's own reward), `node` (every node's local
    reward when it ends: a parent's return then counts its children's, which pays for over-delegating) or `root`"""
    lam: float = 0.0
    """RAO local reward R = s + lam * mean(children's s): a parent is paid for sub-agents that succeed"""
    delegate_cost: float = 0.05
    """subtracted from a node's own reward (`--reward-mode own`) for each delegating turn (delegation is not free)"""
    delegate_cost_ramp: float = 0.5
    """`--credit node`: the trainer charges `delegate_cost` itself, ramped up linearly from 0 over this fraction of
    training (0: the env charges the full cost from the start), so delegation is tried before it is taxed"""
    progress_reward: float = 0.0
    """optional shaping: reward for each craft a node makes from its own plan (0 = off)"""

    # Algorithm specific arguments
    total_timesteps: int = 250_000
    """total timesteps of the experiments"""
    learning_rate: float = 1e-3
    """the learning rate of the optimizer"""
    num_envs: int = 8
    """the number of parallel game environments"""
    num_steps: int = 128
    """the number of steps to run in each environment per policy rollout"""
    anneal_lr: bool = True
    """Toggle learning rate annealing for policy and value networks"""
    gamma: float = 1.0
    """the discount factor gamma (per node step with `--credit node`: < 1 would make a parent that delegates,
    and so finishes in fewer of its own steps, look better than one that crafts)"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: int = 4
    """the number of mini-batches"""
    update_epochs: int = 4
    """the K epochs to update the policy"""
    norm_adv: bool = True
    """Toggles advantages normalization"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """Toggles whether or not to use a clipped loss for the value function."""
    ent_coef: float = 0.01
    """coefficient of the entropy"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: float | None = None
    """the target KL divergence threshold"""

    # Evaluation (greedy policy on val targets)
    eval_episodes: int = 24
    """episodes per difficulty at each evaluation"""
    eval_every: int = 0
    """evaluate every this many iterations (0: only after training)"""
    eval_difficulties: tuple[str, ...] = DIFFICULTIES
    """difficulties evaluated (val split)"""
    eval_extreme_every: int = 1000
    """evaluate extreme only at every this-many-th evaluation (its trees are ~4k steps) and at the end"""
    results_json: str | None = None
    """write the evaluation curve and final table here"""
    save_model: bool = False
    """whether to save the model into the run folder"""

    # to be filled in runtime
    batch_size: int = 0
    """the batch size (computed in runtime)"""
    minibatch_size: int = 0
    """the mini-batch size (computed in runtime)"""
    num_iterations: int = 0
    """the number of iterations (computed in runtime)"""
    run_name: str = field(default="", repr=False)
    """the run's name (computed in runtime)"""


def depth_for(args: Args, difficulty: str) -> int:
    """max_depth for a difficulty: extreme gets the depth its delegating oracle needs."""
    if difficulty != "extreme":
        return args.max_depth
    if args.extreme_max_depth is not None:
        return args.extreme_max_depth
    from rao_envs.registration import task_spec

    return max(args.max_depth, task_spec(args.env_id).load().max_depth_for("extreme"))


def env_kwargs(args: Args, difficulty: str, split: str) -> dict:
    """Keyword arguments of one discrete env."""
    return dict(
        task_id=args.env_id, delegate=args.delegate, delegate_each=args.delegate_each, reward_mode=args.reward_mode, difficulty=difficulty,
        progress_reward=args.progress_reward if split == "train" else 0.0,
        delegate_cost=0.0 if args.delegate_cost_ramp > 0 else args.delegate_cost,
        split=split, max_depth=depth_for(args, difficulty), max_steps_per_node=args.max_steps_per_node, lam=args.lam,
    )


def make_env(args: Args, idx: int, run_name: str):
    def thunk():
        env = DiscreteRaoEnv(**env_kwargs(args, args.difficulty, "train"))
        env = gym.wrappers.RecordEpisodeStatistics(env)
        return env

    return thunk


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    def __init__(self, n_obs: int, n_actions: int):
        super().__init__()
        self.critic = nn.Sequential(
            layer_init(nn.Linear(n_obs, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 1), std=1.0),
        )
        self.actor = nn.Sequential(
            layer_init(nn.Linear(n_obs, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, n_actions), std=0.01),
        )

    def get_value(self, x):
        return self.critic(x)

    def get_action_and_value(self, x, mask, action=None):
        # masked categorical: inadmissible actions get a logit of -1e8 (probability 0, no gradient)
        logits = torch.where(mask, self.actor(x), torch.tensor(-1e8, device=x.device))
        probs = Categorical(logits=logits)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(x)


@torch.no_grad()
def evaluate(agent: Agent, args: Args, difficulty: str, episodes: int, device, seed: int = 10_000) -> dict:
    """Greedy policy on `episodes` val instances of `difficulty`, all envs stepped as one batch."""
    envs = [DiscreteRaoEnv(**env_kwargs(args, difficulty, "val")) for _ in range(episodes)]
    obs, masks = [], []
    for i, env in enumerate(envs):
        o, info = env.reset(seed=seed + i)
        obs.append(o)
        masks.append(info["action_mask"])
    live, scores, nodes, steps = list(range(episodes)), [0.0] * episodes, [0] * episodes, 0
    while live:
        x = torch.tensor(np.stack([obs[i] for i in live]), device=device)
        m = torch.tensor(np.stack([masks[i] for i in live]), dtype=torch.bool, device=device)
        actions = torch.where(m, agent.actor(x), torch.tensor(-1e8, device=device)).argmax(1).tolist()
        still = []
        for i, a in zip(live, actions):
            obs[i], _, term, trunc, info = envs[i].step(a)
            masks[i] = info["action_mask"]
            steps += 1
            if term or trunc:
                scores[i], nodes[i] = info["root_score"], info["nodes"]
            else:
                still.append(i)
        live = still
    return {"success": float(np.mean([s == 1.0 for s in scores])), "nodes": float(np.mean(nodes)), "steps": steps}


def step_field(infos: dict, key: str) -> np.ndarray:
    """A per-env info field of the step just taken (for an env that reset, it is in `final_info`)."""
    values = np.array(infos[key])
    if "final_info" in infos:
        final = infos["final_info"]
        ended = np.asarray(final.get(f"_{key}", np.zeros(len(values), dtype=bool)))
        values = np.where(ended, np.asarray(final.get(key, values)), values)
    return values


def node_gae(args, node_keys, node_rewards, node_dones, values, next_value, next_node):
    """GAE per tree node (RAO credit): each node's steps form their own trajectory with its own reward.

    A step's successor is the same node's next step, not the env's next step (which may belong to a child).
    A node still open when the rollout ends bootstraps from the value of its pending observation if it is
    the env's active node, else (it waits on children) from its last step's value.
    """
    T, N = node_rewards.shape
    v = values.cpu().numpy()
    nv_end = next_value.reshape(-1).cpu().numpy()
    adv = np.zeros((T, N), dtype=np.float32)
    for i in range(N):
        later: dict = {}  # node key -> index of that node's next step
        for t in reversed(range(T)):
            key = node_keys[t, i]
            if node_dones[t, i]:
                nonterminal, nextvalue, nextadv = 0.0, 0.0, 0.0
            elif key in later:
                t2 = later[key]
                nonterminal, nextvalue, nextadv = 1.0, v[t2, i], adv[t2, i]
            elif key == next_node[i]:
                nonterminal, nextvalue, nextadv = 1.0, nv_end[i], 0.0
            else:
                nonterminal, nextvalue, nextadv = 1.0, v[t, i], 0.0
            delta = node_rewards[t, i] + args.gamma * nextvalue * nonterminal - v[t, i]
            adv[t, i] = delta + args.gamma * args.gae_lambda * nonterminal * nextadv
            later[key] = t
    advantages = torch.tensor(adv, device=values.device)
    return advantages, advantages + values


def train(args: Args, progress: Callable[[int, int], None] | None = None) -> dict:
    """Run PPO; return {"curve": [...], "final": {difficulty: success}, ...}. `progress(step, total)` is optional."""
    args.batch_size = int(args.num_envs * args.num_steps)
    args.minibatch_size = int(args.batch_size // args.num_minibatches)
    args.num_iterations = max(1, args.total_timesteps // args.batch_size)
    variant = "delegate" if args.delegate else "flat"
    run_name = args.run_name or f"{args.env_id}__{args.exp_name}__{variant}__{args.seed}__{int(time.time())}"
    if args.track:
        import wandb

        wandb.init(
            project=args.wandb_project_name,
            entity=args.wandb_entity,
            sync_tensorboard=True,
            config=vars(args),
            name=run_name,
            monitor_gym=True,
            save_code=True,
        )
    writer = SummaryWriter(f"{args.log_dir}/{run_name}")
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])),
    )

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    # env setup (SAME_STEP autoreset: a finished env returns the next episode's first observation and mask)
    envs = gym.vector.SyncVectorEnv(
        [make_env(args, i, run_name) for i in range(args.num_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    assert isinstance(envs.single_action_space, gym.spaces.Discrete), "only discrete action space is supported"
    n_obs, n_act = envs.single_observation_space.shape[0], int(envs.single_action_space.n)

    agent = Agent(n_obs, n_act).to(device)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

    # ALGO Logic: Storage setup
    obs = torch.zeros((args.num_steps, args.num_envs, n_obs)).to(device)
    masks = torch.zeros((args.num_steps, args.num_envs, n_act), dtype=torch.bool).to(device)
    actions = torch.zeros((args.num_steps, args.num_envs)).to(device)
    logprobs = torch.zeros((args.num_steps, args.num_envs)).to(device)
    rewards = torch.zeros((args.num_steps, args.num_envs)).to(device)
    dones = torch.zeros((args.num_steps, args.num_envs)).to(device)
    values = torch.zeros((args.num_steps, args.num_envs)).to(device)
    # RAO credit: which tree node acted at each step, and that node's own reward / end
    node_keys = np.empty((args.num_steps, args.num_envs), dtype=object)
    node_rewards = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    node_dones = np.zeros((args.num_steps, args.num_envs), dtype=bool)

    def run_eval(global_step: int, final: bool, index: int) -> dict:
        row = {"step": global_step}
        for d in args.eval_difficulties:
            if d == "extreme" and not final and index % max(1, args.eval_extreme_every):
                continue
            res = evaluate(agent, args, d, args.eval_episodes, device)
            row[d] = res["success"]
            writer.add_scalar(f"charts/success_rate_{d}", res["success"], global_step)
            writer.add_scalar(f"charts/eval_nodes_{d}", res["nodes"], global_step)
        print(f"global_step={global_step}, eval success: " + ", ".join(f"{d} {row[d]:.0%}" for d in row if d != "step"))
        return row

    # TRY NOT TO MODIFY: start the game
    global_step = 0
    start_time = time.time()
    next_obs, info = envs.reset(seed=args.seed)
    next_obs = torch.Tensor(next_obs).to(device)
    next_mask = torch.tensor(info["action_mask"], dtype=torch.bool).to(device)
    next_done = torch.zeros(args.num_envs).to(device)
    episode_ids = np.arange(args.num_envs)  # a node is (episode id, node id): ids repeat across episodes
    next_node = [(int(e), n) for e, n in zip(episode_ids, info["node"])]
    curve, recent = [], []
    names = envs.envs[0].unwrapped.action_names
    is_delegate = torch.tensor([n.startswith("delegate") for n in names], device=device)

    for iteration in range(1, args.num_iterations + 1):
        # Annealing the rate if instructed to do so.
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / args.num_iterations
            lrnow = frac * args.learning_rate
            optimizer.param_groups[0]["lr"] = lrnow

        for step in range(0, args.num_steps):
            global_step += args.num_envs
            obs[step] = next_obs
            masks[step] = next_mask
            dones[step] = next_done
            node_keys[step] = next_node

            # ALGO LOGIC: action logic
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs, next_mask)
                values[step] = value.flatten()
            actions[step] = action
            logprobs[step] = logprob

            # TRY NOT TO MODIFY: execute the game and log data.
            next_obs, reward, terminations, truncations, infos = envs.step(action.cpu().numpy())
            next_done = np.logical_or(terminations, truncations)
            rewards[step] = torch.tensor(reward).to(device).view(-1)
            next_obs, next_done = torch.Tensor(next_obs).to(device), torch.Tensor(next_done).to(device)
            next_mask = torch.tensor(infos["action_mask"], dtype=torch.bool).to(device)
            node_rewards[step] = step_field(infos, "node_reward")
            if args.delegate_cost_ramp > 0:  # the trainer's delegate cost, ramped in (masked actions are never invalid)
                ramp = min(1.0, (iteration - 1) / max(1.0, args.delegate_cost_ramp * args.num_iterations))
                node_rewards[step] -= args.delegate_cost * ramp * is_delegate[action].cpu().numpy()
            node_dones[step] = step_field(infos, "node_done")
            episode_ids = np.where(next_done.cpu().numpy() > 0, episode_ids + args.num_envs, episode_ids)
            next_node = [(int(e), n) for e, n in zip(episode_ids, infos["node"])]

            if "final_info" in infos:
                final = infos["final_info"]
                for i in np.flatnonzero(final.get("_episode", [])):
                    ep_r, ep_l = float(final["episode"]["r"][i]), int(final["episode"]["l"][i])
                    recent.append(float(final["root_score"][i]))
                    writer.add_scalar("charts/episodic_return", ep_r, global_step)
                    writer.add_scalar("charts/episodic_length", ep_l, global_step)
                    writer.add_scalar("charts/root_success", float(final["root_score"][i]), global_step)
                    writer.add_scalar("charts/tree_nodes", int(final["nodes"][i]), global_step)

        # bootstrap value if not done
        with torch.no_grad():
            next_value = agent.get_value(next_obs).reshape(1, -1)
            if args.credit == "node":  # RAO: every tree node is its own trajectory with its own reward
                advantages, returns = node_gae(args, node_keys, node_rewards, node_dones, values, next_value, next_node)
            else:  # classic CleanRL GAE over the env's stream of steps
                advantages = torch.zeros_like(rewards).to(device)
                lastgaelam = 0
                for t in reversed(range(args.num_steps)):
                    if t == args.num_steps - 1:
                        nextnonterminal = 1.0 - next_done
                        nextvalues = next_value
                    else:
                        nextnonterminal = 1.0 - dones[t + 1]
                        nextvalues = values[t + 1]
                    delta = rewards[t] + args.gamma * nextvalues * nextnonterminal - values[t]
                    advantages[t] = lastgaelam = delta + args.gamma * args.gae_lambda * nextnonterminal * lastgaelam
                returns = advantages + values

        # flatten the batch
        b_obs = obs.reshape((-1, n_obs))
        b_masks = masks.reshape((-1, n_act))
        b_logprobs = logprobs.reshape(-1)
        b_actions = actions.reshape(-1)
        b_advantages = advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        b_values = values.reshape(-1)

        # Optimizing the policy and value network
        b_inds = np.arange(args.batch_size)
        clipfracs = []
        for epoch in range(args.update_epochs):
            np.random.shuffle(b_inds)
            for start in range(0, args.batch_size, args.minibatch_size):
                end = start + args.minibatch_size
                mb_inds = b_inds[start:end]

                _, newlogprob, entropy, newvalue = agent.get_action_and_value(
                    b_obs[mb_inds], b_masks[mb_inds], b_actions.long()[mb_inds]
                )
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()

                with torch.no_grad():
                    # calculate approx_kl http://joschu.net/blog/kl-approx.html
                    old_approx_kl = (-logratio).mean()
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs += [((ratio - 1.0).abs() > args.clip_coef).float().mean().item()]

                mb_advantages = b_advantages[mb_inds]
                if args.norm_adv:
                    mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)

                # Policy loss
                pg_loss1 = -mb_advantages * ratio
                pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
                pg_loss = torch.max(pg_loss1, pg_loss2).mean()

                # Value loss
                newvalue = newvalue.view(-1)
                if args.clip_vloss:
                    v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                    v_clipped = b_values[mb_inds] + torch.clamp(
                        newvalue - b_values[mb_inds],
                        -args.clip_coef,
                        args.clip_coef,
                    )
                    v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
                    v_loss_max = torch.max(v_loss_unclipped, v_loss_clipped)
                    v_loss = 0.5 * v_loss_max.mean()
                else:
                    v_loss = 0.5 * ((newvalue - b_returns[mb_inds]) ** 2).mean()

                entropy_loss = entropy.mean()
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()

            if args.target_kl is not None and approx_kl > args.target_kl:
                break

        y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y

        # TRY NOT TO MODIFY: record rewards for plotting purposes
        writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
        if args.delegate_cost_ramp > 0:
            writer.add_scalar("charts/delegate_cost", args.delegate_cost * ramp, global_step)
        writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
        writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
        writer.add_scalar("losses/entropy", entropy_loss.item(), global_step)
        writer.add_scalar("losses/old_approx_kl", old_approx_kl.item(), global_step)
        writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
        writer.add_scalar("losses/clipfrac", np.mean(clipfracs), global_step)
        writer.add_scalar("losses/explained_variance", explained_var, global_step)
        sps = int(global_step / (time.time() - start_time))
        writer.add_scalar("charts/SPS", sps, global_step)
        if progress is None:
            train_success = np.mean(recent[-100:]) if recent else float("nan")
            print(f"iteration {iteration}/{args.num_iterations} SPS: {sps} train root success (last 100): {train_success:.2f}")
        else:
            progress(global_step, args.num_iterations * args.batch_size)
        if args.eval_every and iteration % args.eval_every == 0 and iteration != args.num_iterations:
            curve.append(run_eval(global_step, False, len(curve)))

    curve.append(run_eval(global_step, True, len(curve)))
    result = {
        "variant": variant, "seed": args.seed, "curve": curve, "final": {d: curve[-1][d] for d in args.eval_difficulties},
        "train_steps": global_step, "wall_s": time.time() - start_time,
        "max_depth": {d: depth_for(args, d) for d in args.eval_difficulties},
    }
    if args.save_model:
        model_path = f"{args.log_dir}/{run_name}/{args.exp_name}.cleanrl_model"
        torch.save(agent.state_dict(), model_path)
        print(f"model saved to {model_path}")
    if args.results_json:
        with open(args.results_json, "w") as f:
            json.dump(result, f, indent=2)
    envs.close()
    writer.close()
    result["agent"] = agent
    return result


if __name__ == "__main__":
    args = tyro.cli(Args)
    out = train(args)
    print(json.dumps({"variant": out["variant"], "final": out["final"], "wall_s": round(out["wall_s"], 1)}))
