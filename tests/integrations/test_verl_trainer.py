"""verl's real code paths on CPU: its V1 sync trainer (``fit``, ``step``, ``_save_checkpoint``, ``_load_checkpoint``),
its ``AgentLoopWorkerTQ`` Ray actors with the ``single_turn_agent`` loop, its reward workers, Ray and TransferQueue,
driven by ``examples/verl/smoke_hooks_cpu.py`` (a scripted LLM server, a character tokenizer and a model config
built there, no weights; the actor worker group is stubbed: it needs a GPU).

One run is killed for real (SIGKILL of its process group) while verl's checkpoint callback saves step 4, that is,
after verl wrote ``latest_checkpointed_iteration.txt`` and before the knapsack state; verl's trainer is then built
again (``auto`` resume: refused, naming the newest complete checkpoint) and the run resumed from that checkpoint in
a new process. About two minutes on two cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "verl" / "smoke_hooks_cpu.py"
STEPS, KILLED_AT, N, M = 4, 4, 4, 6


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("smoke_hooks_cpu", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _launch(out: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, str(SCRIPT), "--out", str(out), "--steps", str(STEPS), *args]
    log = (out / f"log_{len(list(out.glob('log_*')))}.txt").open("wb")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _tail(out: Path) -> str:
    return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(out.glob("log_*")))


def _events(out: Path, resume: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / f"events_{resume}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run A (4 steps, killed in step 4's save; checkpoints in ckpt/) then B (a new process resumed from
    ckpt/global_step_3, saving into ckpt_b/, so that A's checkpoints stay as the kill left them)."""
    out = tmp_path_factory.mktemp("verl_cpu")
    run_a = _launch(out, "--block-save", str(KILLED_AT))
    try:
        deadline = time.monotonic() + 420
        while not (out / f"blocked_{KILLED_AT}").exists():
            assert run_a.poll() is None, (
                f"run A ended (rc {run_a.returncode}) before step {KILLED_AT}'s save:\n{_tail(out)}"
            )
            assert time.monotonic() < deadline, f"run A did not reach step {KILLED_AT}'s save:\n{_tail(out)}"
            time.sleep(0.5)
    finally:
        os.killpg(run_a.pid, signal.SIGKILL)  # the process group the test started: the driver and its Ray children
        run_a.wait()
    assert run_a.returncode == -signal.SIGKILL
    complete = out / "ckpt" / f"global_step_{KILLED_AT - 1}"
    run_b = _launch(out, "--ckpt", str(out / "ckpt_b"), "--resume", "resume_path", "--resume-from", str(complete))
    try:
        assert run_b.wait(timeout=420) == 0, f"run B failed:\n{_tail(out)}"
    finally:
        if run_b.poll() is None:
            os.killpg(run_b.pid, signal.SIGKILL)
            run_b.wait()
    return out


def _plans(events: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {e["step"]: e for e in events if e["event"] == "plan"}


def test_verls_worker_and_agent_loop_run_the_stamped_counts_and_verls_advantages_are_ours(runs: Path) -> None:
    """verl's AgentLoopWorkerTQ ran exactly the stamped number of sessions per prompt; verl's replay buffer sampled
    them all and the rule observed them; verl padded 24 rollouts to 32 under a uid of its own (not observed);
    verl's GRPO advantages of the real rows are knapsack_rl.grpo.grouped_advantages of their rewards."""
    events = _events(runs, "disable")
    plans, samples = _plans(events), {e["step"]: e for e in events if e["event"] == "sample"}
    assert sorted(plans) == sorted(samples) == list(range(1, STEPS + 1))
    for step, plan in plans.items():
        assert sum(plan["counts"]) == M * N
        ran = samples[step]["per_uid"]  # rollouts per uid in the batch verl's replay buffer sampled
        assert ran == dict(zip(plan["uids"], plan["counts"], strict=True)), step
        assert plan["stamped"] == plan["counts"]  # __rollout_n__ as the workers got it
        assert samples[step]["metrics"]["train/rollouts"] == M * N and samples[step]["metrics"]["train/prompts"] == M
    assert plans[1]["counts"] == [N] * M  # epoch 0: nothing estimated yet
    assert any(len(set(plans[s]["counts"])) > 1 for s in (3, 4))  # epoch 1: the knapsack moved rollouts
    updates = [e for e in events if e["event"] == "update"]
    assert len(updates) == STEPS
    for update in updates:
        assert (update["rows"], update["real"]) == (32, M * N)  # verl's ppo_mini_batch 4 x n 4 = 16 divides 32
        assert len(update["padding_uids"]) == 1 and update["padding_uids"][0].startswith("pad")
        assert update["max_abs_diff"] < 1e-6 and update["max_abs_adv"] > 1.0


def test_a_kill_between_verls_marker_and_the_knapsack_save_is_refused_on_resume_naming_the_complete_one(
    runs: Path,
) -> None:
    """verl 0.9.1 writes latest_checkpointed_iteration.txt, then calls on_save: the killed run left global_step_4
    with verl's state and no knapsack state. Building verl's trainer again (resume_mode=auto) refuses in one line,
    naming that folder, the newest checkpoint with both states and the opt-out, instead of restarting the rule."""
    from verl.trainer.ppo.v1 import get_trainer_cls

    ckpt = runs / "ckpt"
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text() == str(KILLED_AT)
    killed, complete = ckpt / f"global_step_{KILLED_AT}", ckpt / f"global_step_{KILLED_AT - 1}"
    assert (killed / "actor").is_dir() and (killed / "data.pt").is_file() and not (killed / "knapsack").exists()
    assert (complete / "knapsack" / "state.bin").is_file()
    smoke = _script()
    files = smoke.write_files(runs / "files_resume")
    config = smoke.compose_config(files, ckpt, STEPS, "auto", None)
    with pytest.raises(FileNotFoundError) as info:
        get_trainer_cls("sync")(config=config)  # verl builds the checkpoint callback first: nothing else starts
    message = str(info.value)
    assert f"no knapsack state in {killed}" in message and "\n" not in message
    assert f"trainer.resume_mode=resume_path trainer.resume_from_path={complete}" in message
    assert "knapsack.resume_without_state=true" in message


def test_a_resumed_run_restores_the_rule_state_exactly_and_plans_the_next_step_as_the_killed_run_did(
    runs: Path,
) -> None:
    """Run B (a new process; verl's _load_checkpoint restores the weights stub and the dataloader from data.pt, the
    knapsack callback the rule's state) holds exactly the state saved at step 3 and plans step 4 as run A did."""
    resumed = _events(runs, "resume_path")
    restored = next(e for e in resumed if e["event"] == "restored")
    assert restored["global_steps"] == KILLED_AT - 1
    saved = runs / "ckpt" / f"global_step_{KILLED_AT - 1}" / "knapsack" / "state.bin"
    assert (Path(restored["folder"]) / "state.bin").read_bytes() == saved.read_bytes()
    killed_plan, resumed_plan = _plans(_events(runs, "disable"))[KILLED_AT], _plans(resumed)[KILLED_AT]
    assert resumed_plan["ids"] == killed_plan["ids"]  # verl's dataloader state
    assert resumed_plan["counts"] == killed_plan["counts"] and len(set(killed_plan["counts"])) > 1  # the rule's
    assert [e["event"] for e in resumed][-1] == "done"
