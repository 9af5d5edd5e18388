#!/usr/bin/env bash
# A small single-GPU Knapsack RL run on verl 0.9.x (>= 0.9.1) with the knapsack-rl adapter: Qwen2.5-0.5B-Instruct
# (any small chat model works), 1024 training prompts (verl's data.train_max_samples), 32 prompts x 8 rollouts
# per step, counts in [2, 32], 1024-token responses, 200 steps: about 6 passes, because the 'project' preset
# plans the first pass uniformly and allocates from the second (prompts must come back).
# Data (DATA=gym, the default, needs no download; DATA=dapo needs the downloaded DAPO-Math-17K and AIME 2024):
#   gym:  python -m knapsack_rl.integrations.verl.data --out-dir ~/data/knapsack_gym
#         (reasoning-gym problems: train.parquet and a held-out test.parquet, scored by knapsack_rl.tasks.gym;
#         other --train-size / --val-size / --seed: give the same as GYM_TRAIN_SIZE / GYM_VAL_SIZE / GYM_SEED)
#   dapo: python examples/verl/prepare_dapo_math.py --input dapo-math-17k.parquet --output ~/data/dapo17k_dedup/train.parquet
#         python examples/verl/prepare_dapo_math.py --input aime-2024.parquet --output ~/data/aime24/test.parquet --split test
# Loss: every prompt weighs the same whatever its count (algorithm.adv_estimator=knapsack_grpo_group_mean with
# verl's token-mean): under a plain token mean knapsack hurt in the project's own trainer (README: the loss choice).
# Fits one 24-80 GB GPU; lower data.train_batch_size or the token limits for smaller ones.
#   bash examples/verl/run_small_1gpu.sh                          # knapsack allocation
#   bash examples/verl/run_small_1gpu.sh knapsack.rule=uniform  # uniform baseline, same metrics
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
MODEL=${MODEL:-Qwen/Qwen2.5-0.5B-Instruct}
DATA=${DATA:-gym}
case "$DATA" in
    gym)
        TRAIN_FILES=${TRAIN_FILES:-$HOME/data/knapsack_gym/train.parquet}
        VAL_FILES=${VAL_FILES:-$HOME/data/knapsack_gym/test.parquet}
        # the rows' data_source is knapsack-rl's: score them with reasoning-gym's own score_answer, under the
        # GymConfig that wrote them (reward.custom_reward_function.{path,name} and reward_kwargs.reasoning_gym)
        REWARD_TEXT=$("$PYTHON" -m knapsack_rl.integrations.verl.data --reward-overrides \
            --train-size "${GYM_TRAIN_SIZE:-1024}" --val-size "${GYM_VAL_SIZE:-128}" --seed "${GYM_SEED:-0}")
        mapfile -t REWARD <<< "$REWARD_TEXT"
        ;;
    dapo)
        TRAIN_FILES=${TRAIN_FILES:-$HOME/data/dapo17k_dedup/train.parquet}
        VAL_FILES=${VAL_FILES:-$HOME/data/aime24/test.parquet}
        REWARD=()  # verl's built-in math_dapo scorer, chosen by the rows' data_source
        ;;
    *)
        echo "DATA must be gym or dapo; got DATA=$DATA" >&2
        exit 2
        ;;
esac
EXPERIMENT=${EXPERIMENT:-small-1gpu-knapsack}
CKPT_DIR=${CKPT_DIR:-$HOME/checkpoints/knapsack-rl/$EXPERIMENT}

cmd=(
    "$PYTHON" -m verl.trainer.main_ppo
    --config-path="$CONFIG_DIR"
    --config-name=knapsack_grpo
    data.train_files="$TRAIN_FILES"
    data.val_files="$VAL_FILES"
    data.train_batch_size=32
    data.train_max_samples=1024
    data.max_prompt_length=1024
    data.max_response_length=1024
    data.filter_overlong_prompts=true
    actor_rollout_ref.model.path="$MODEL"
    actor_rollout_ref.model.use_remove_padding=true
    actor_rollout_ref.model.enable_gradient_checkpointing=true
    actor_rollout_ref.actor.optim.lr=1e-6
    actor_rollout_ref.actor.ppo_mini_batch_size=8
    actor_rollout_ref.actor.ppo_epochs=1
    actor_rollout_ref.actor.use_dynamic_bsz=true
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=16384
    actor_rollout_ref.actor.clip_ratio_low=0.2
    actor_rollout_ref.actor.clip_ratio_high=0.28
    actor_rollout_ref.actor.loss_agg_mode=token-mean
    algorithm.adv_estimator=knapsack_grpo_group_mean
    actor_rollout_ref.actor.use_kl_loss=false
    actor_rollout_ref.actor.entropy_coeff=0
    actor_rollout_ref.rollout.name=vllm
    actor_rollout_ref.rollout.n=8
    actor_rollout_ref.rollout.temperature=1.0
    actor_rollout_ref.rollout.tensor_model_parallel_size=1
    actor_rollout_ref.rollout.gpu_memory_utilization=0.4
    actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=true
    actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=16384
    actor_rollout_ref.rollout.val_kwargs.n=4
    actor_rollout_ref.rollout.val_kwargs.temperature=0.6
    actor_rollout_ref.rollout.val_kwargs.do_sample=true
    +knapsack.max_n=32
    trainer.project_name=knapsack-rl
    trainer.experiment_name="$EXPERIMENT"
    trainer.default_local_dir="$CKPT_DIR"
    trainer.logger='["console","tensorboard"]'
    trainer.nnodes=1
    trainer.n_gpus_per_node=1
    trainer.total_training_steps=200
    trainer.total_epochs=100
    trainer.test_freq=20
    trainer.save_freq=50
    trainer.val_before_train=false
    "${REWARD[@]}"
    "$@"
)

if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%s\n' "${cmd[@]}"
    exit 0
fi
# the config as main_ppo will compose it, checked as the knapsack hooks read it, before Ray starts
"$PYTHON" -m knapsack_rl.integrations.verl.check --devices --config-dir "$CONFIG_DIR" "${cmd[@]:5}"
exec "${cmd[@]}"
