#!/usr/bin/env bash
# Knapsack RL recipe on verl 0.9.x (>= 0.9.1) with the knapsack-rl adapter (no fork of verl):
#   Qwen2.5-Math-7B, de-duplicated DAPO-Math-17K, 256 prompts x 8 rollouts = 2048 rollouts per step,
#   per-prompt counts in [2, 128], PPO mini-batch 32 prompts, 1 PPO epoch, lr 1e-6, grad clip 1.0,
#   clip 0.2 / 0.28, dual clip 10, no KL, no entropy bonus, temperature 1.0, 2048 / 4096 tokens,
#   1000 steps, validation every 10 steps (avg@16 at temperature 0.6). 8 GPUs per node; NNODES nodes.
#   Advantage: the recipe's (GRPO by uid, clipped to +-5: algorithm.adv_estimator=knapsack_recipe_grpo) under
#   the recipe's token-mean loss; ADV_ESTIMATOR=knapsack_grpo_group_mean weighs every prompt the same instead.
#
# Multi-node through Ray (knapsack-rl must be installed on every node: verl's TaskRunner, which runs
# the adapter, may be scheduled on any of them):
#   head:     ray start --head --port=6379 --dashboard-host=0.0.0.0
#   others:   ray start --address=<head-ip>:6379
#   head:     NNODES=2 bash examples/verl/run_qwen2.5_math_7b_dapo_knapsack.sh
# verl's ray.init() joins the running cluster. Data (download both files first):
#   python examples/verl/prepare_dapo_math.py --input dapo-math-17k.parquet --output ~/data/dapo17k_dedup/train.parquet
#   python examples/verl/prepare_dapo_math.py --input aime-2024.parquet --output ~/data/aime24/test.parquet --split test
# Before launching verl, `python -m knapsack_rl.integrations.verl.check` checks the composed config and the
# data files (no Ray, no GPU). DRY_RUN=1 prints the verl command (one argument per line) instead of running
# anything; PYTHON picks the interpreter (default: the repository's .venv/bin/python when it exists).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi
# the Hydra YAML shipped with knapsack-rl (verl's ppo_trainer + the three knapsack hooks)
CONFIG_DIR=${CONFIG_DIR:-$("$PYTHON" -m knapsack_rl.integrations.verl.config --dir)}
MODEL=${MODEL:-Qwen/Qwen2.5-Math-7B}
TRAIN_FILES=${TRAIN_FILES:-$HOME/data/dapo17k_dedup/train.parquet}
VAL_FILES=${VAL_FILES:-$HOME/data/aime24/test.parquet}
NNODES=${NNODES:-1}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MAX_N=${MAX_N:-128}
ADV_ESTIMATOR=${ADV_ESTIMATOR:-knapsack_recipe_grpo}
EXPERIMENT=${EXPERIMENT:-qwen2.5-math-7b-dapo17k-knapsack-maxn${MAX_N}}
CKPT_DIR=${CKPT_DIR:-$HOME/checkpoints/knapsack-rl/$EXPERIMENT}

cmd=(
    "$PYTHON" -m verl.trainer.main_ppo
    --config-path="$CONFIG_DIR"
    --config-name=knapsack_grpo
    data.train_files="$TRAIN_FILES"
    data.val_files="$VAL_FILES"
    data.train_batch_size=256
    data.max_prompt_length=2048
    data.max_response_length=4096
    data.filter_overlong_prompts=true
    data.truncation=error
    actor_rollout_ref.model.path="$MODEL"
    actor_rollout_ref.model.use_remove_padding=true
    actor_rollout_ref.model.enable_gradient_checkpointing=true
    actor_rollout_ref.actor.optim.lr=1e-6
    actor_rollout_ref.actor.optim.lr_warmup_steps=0
    actor_rollout_ref.actor.optim.weight_decay=0.0
    actor_rollout_ref.actor.optim.clip_grad=1.0
    actor_rollout_ref.actor.grad_clip=1.0
    actor_rollout_ref.actor.ppo_mini_batch_size=32
    actor_rollout_ref.actor.ppo_epochs=1
    actor_rollout_ref.actor.use_dynamic_bsz=true
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=24576
    actor_rollout_ref.actor.clip_ratio_low=0.2
    actor_rollout_ref.actor.clip_ratio_high=0.28
    actor_rollout_ref.actor.clip_ratio_c=10.0
    actor_rollout_ref.actor.loss_agg_mode=token-mean
    actor_rollout_ref.actor.use_kl_loss=false
    actor_rollout_ref.actor.entropy_coeff=0
    actor_rollout_ref.actor.fsdp_config.param_offload=false
    actor_rollout_ref.actor.fsdp_config.optimizer_offload=false
    actor_rollout_ref.rollout.name=vllm
    actor_rollout_ref.rollout.n=8
    actor_rollout_ref.rollout.temperature=1.0
    actor_rollout_ref.rollout.top_p=1.0
    actor_rollout_ref.rollout.tensor_model_parallel_size=2
    actor_rollout_ref.rollout.gpu_memory_utilization=0.7
    actor_rollout_ref.rollout.max_num_batched_tokens=8192
    actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=true
    actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=24576
    actor_rollout_ref.rollout.val_kwargs.n=16
    actor_rollout_ref.rollout.val_kwargs.temperature=0.6
    actor_rollout_ref.rollout.val_kwargs.top_p=1.0
    actor_rollout_ref.rollout.val_kwargs.do_sample=true
    algorithm.adv_estimator="$ADV_ESTIMATOR"
    algorithm.norm_adv_by_std_in_grpo=true
    algorithm.use_kl_in_reward=false
    knapsack.preset=recipe
    +knapsack.max_n="$MAX_N"
    trainer.project_name=knapsack-rl
    trainer.experiment_name="$EXPERIMENT"
    trainer.default_local_dir="$CKPT_DIR"
    trainer.logger='["console","tensorboard"]'
    trainer.nnodes="$NNODES"
    trainer.n_gpus_per_node="$GPUS_PER_NODE"
    trainer.total_training_steps=1000
    trainer.total_epochs=100
    trainer.test_freq=10
    trainer.save_freq=50
    trainer.val_before_train=true
    "$@"
)

if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%s\n' "${cmd[@]}"
    exit 0
fi
# the config as main_ppo will compose it, checked as the knapsack hooks read it, before Ray starts
"$PYTHON" -m knapsack_rl.integrations.verl.check --devices --config-dir "$CONFIG_DIR" "${cmd[@]:5}"
exec "${cmd[@]}"
