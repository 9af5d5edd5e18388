"""Resuming: a checkpoint cannot run code, and a run with other settings is refused."""

import copy
import io
import json
import pathlib

import pytest
import torch

from knapsack_rl.train.trainer import Trainer
from tests.train.tiny_run import tiny_config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_config(tmp_path_factory.mktemp("resume"), warmstart_steps=2, checkpoint_every=2, lr=2e-4)


class _Payload:
    """Unpickling this would create a file: the proof that a checkpoint executed code."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_a_planted_pickle_payload_never_runs(base, tmp_path):
    from knapsack_rl.io import write_state_file

    out = tmp_path / "planted"
    out.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"format": 3, "model": _Payload(marker)}, out / "checkpoint.pt")  # the old format: never read
    with pytest.raises(ValueError, match=r"planted/checkpoint.pt: a checkpoint of the format of knapsack-rl 0.1.0"):
        Trainer(base.replace(out_dir=str(out)))
    buf = io.BytesIO()
    torch.save({"model": _Payload(marker)}, buf)  # inside a valid envelope: the tensors go through weights_only
    rule = {"name": "knapsack", "state": {}}
    meta = {"global_step": 0, "rollouts_total": 0, "exhausted": False, "config": {}, "stream": {}, "rule": rule}
    write_state_file(out / "checkpoint.pt", "trainer-checkpoint", 5, meta, {"tensors": buf.getvalue()})
    with pytest.raises(ValueError, match=r"planted/checkpoint.pt: not a loadable knapsack-rl checkpoint \(Weights"):
        Trainer(base.replace(out_dir=str(out)))
    assert not marker.exists()


def test_resume_refuses_other_settings_and_allows_safe_ones(base, tmp_path):
    cfg = base.replace(out_dir=str(tmp_path / "r"))
    Trainer(cfg).train(stop_after=2)  # checkpoint at step 2
    for change, shown in (({"seed": 1}, "seed: 0 -> 1"), ({"lr": 1e-3}, "lr: 0.0002 -> 0.001"),
                          ({"estimator": "beta"}, r"knapsack.tracker.estimator: \"recipe\" -> \"beta\"")):  # fmt: skip
        with pytest.raises(ValueError, match=rf"checkpoint.pt was written by a run with other settings \({shown}"):
            Trainer(cfg.replace(**change))
    resumed = Trainer(cfg.replace(epochs=3, progress=True))  # more epochs: allowed
    assert resumed.global_step == 2
    assert json.loads((tmp_path / "r" / "config.json").read_text())["epochs"] == 3
    resumed.close()  # releases out_dir's lock: one open Trainer per run directory
    fresh = Trainer(cfg.replace(seed=1, resume=False))  # resume=false starts afresh in the same folder
    assert fresh.global_step == 0


def test_preflight_loads_a_checkpoints_policy_and_refuses_another_tasks(base, tmp_path):
    from knapsack_rl.tasks import ArithmeticConfig, TaskConfig
    from knapsack_rl.train.trainer import load_policy_weights, load_task_and_policy

    cfg = base.replace(out_dir=str(tmp_path / "u"), rule="uniform")
    trainer = Trainer(cfg)
    trainer.train(stop_after=2)
    with torch.no_grad():
        next(trainer.model.parameters()).add_(0.5)  # a policy surely unlike the start (tiny groups may give no signal)
    path = trainer.save_checkpoint()
    _, model, _ = load_task_and_policy(cfg, torch.device("cpu"))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    assert load_policy_weights(path, cfg, model, torch.device("cpu")) == 2
    trained = trainer.model.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
    assert any(not torch.equal(v, start[k]) for k, v in model.state_dict().items())
    other = cfg.replace(task=TaskConfig(arithmetic=ArithmeticConfig(train_per_level=(3,) * 8, eval_per_level=1)))
    with pytest.raises(ValueError, match=r"checkpoint.pt was written for another policy or task \(task differ\)"):
        load_policy_weights(path, other, model, torch.device("cpu"))


# ------------------------------------------------------------------ untrusted checkpoints change nothing
@pytest.fixture(scope="module")
def trained(base, tmp_path_factory):
    """A trainer 2 steps in (optimizer state, tracker, stream and RNGs all moved), and its config."""
    cfg = base.replace(out_dir=str(tmp_path_factory.mktemp("trained") / "run"))
    trainer = Trainer(cfg)
    trainer.train(stop_after=2)
    return trainer, cfg


def _snapshot(trainer: Trainer) -> dict[str, bytes]:
    """Every piece of state a load could change (model, optimizer, rule, stream, counters, RNGs), as bytes."""
    out = {}
    for key, value in trainer.state_dict().items():  # one by one: a pickle's memo would tie equal strings across keys
        buf = io.BytesIO()
        torch.save(value, buf)
        out[key] = buf.getvalue()
    return out


def _write_forged(trainer, path, edit, monkeypatch) -> None:
    """Save ``trainer``'s state edited by ``edit`` through the trainer's own checkpoint writer (so the
    checksum is valid: what a forger, who has no key to lack, can always produce)."""
    state = copy.deepcopy(trainer.state_dict())  # the optimizer's state dict shares the live per-parameter dicts
    edit(state)
    with monkeypatch.context() as m:
        m.setattr(trainer, "state_dict", lambda: state)
        m.setattr(trainer, "out_dir", path.parent)
        trainer.save_checkpoint()


def _set(key, value):
    return lambda state: state.__setitem__(key, value)


def _first_weight(state):
    return next(iter(state["model"]))


def _exp_avg(state):
    return state["optimizer"]["state"][0]["exp_avg"]


FORGED = [
    (_set("global_step", 10**30), r"global_step must be <= 9223372036854775807; got global_step=10{30}"),
    (_set("rollouts_total", -1), r"rollouts_total must be >= 0; got rollouts_total=-1"),
    (_set("exhausted", "no"), r"exhausted must be true or false \(a bool\); got exhausted='no'"),
    (_set("stream", {"epoch": 0}), r"not a prompt stream state \(keys 'epoch', 'position'\); got \['epoch'\]"),
    (
        lambda s: s["model"].__setitem__(_first_weight(s), torch.zeros(3)),
        r"model\['.*'\] must be torch.float32 of shape",
    ),
    (lambda s: s["model"].pop(_first_weight(s)), r"model tensors are not this run's \(missing \["),
    (
        lambda s: s["optimizer"]["state"][0].__setitem__("exp_avg", _exp_avg(s)[:1]),
        r"optimizer state\[0\]\['exp_avg'\]",
    ),
    (lambda s: s["optimizer"]["param_groups"][0].__setitem__("lr", 1.0), r"optimizer param_groups\[0\]\['lr'\] is 1.0"),
    (
        lambda s: s["optimizer"]["state"][0].__setitem__("step", torch.tensor(float("nan"))),
        r"\['step'\] must be a finite",
    ),
    (
        _set("generator", torch.zeros(5056, dtype=torch.uint8)),
        r"generator is not a valid generator state \(Invalid mt19937",
    ),
    (_set("torch_rng", torch.zeros(7, dtype=torch.uint8)), r"torch_rng is not a valid generator state"),
    (_set("stream", {"epoch": 0, "position": 10**6}), r"position must be <= 16; got position=1000000"),
    (lambda s: s["rule"].__setitem__("state", {"version": 1}), r"a planner state holds exactly"),
]


@pytest.mark.parametrize(("edit", "message"), FORGED, ids=[m[:36] for _, m in FORGED])
def test_a_forged_checkpoint_is_refused_in_one_line_and_changes_nothing(trained, tmp_path, monkeypatch, edit, message):
    trainer, _ = trained
    path = tmp_path / "forged" / "checkpoint.pt"
    path.parent.mkdir()
    _write_forged(trainer, path, edit, monkeypatch)
    before = _snapshot(trainer)
    with pytest.raises(ValueError, match=rf"^{path}: .*{message}") as info:
        trainer.load_checkpoint(path)
    assert "\n" not in str(info.value)
    assert _snapshot(trainer) == before  # model, optimizer, rule, stream, counters and RNGs untouched


def test_a_flipped_weight_byte_or_an_empty_file_is_refused(trained, tmp_path):
    _, cfg = trained
    out = tmp_path / "run"
    out.mkdir()
    data = bytearray((pathlib.Path(cfg.out_dir) / "checkpoint.pt").read_bytes())
    data[len(data) // 2] ^= 1  # the middle of the file: weights
    (out / "checkpoint.pt").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"checkpoint.pt: state file is truncated or corrupt \(SHA-256 mismatch\)"):
        Trainer(cfg.replace(out_dir=str(out)))
    (out / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"checkpoint.pt: state file is truncated \(0 bytes\)"):
        Trainer(cfg.replace(out_dir=str(out)))


def test_an_incomplete_checkpoint_is_refused_in_one_line_and_changes_nothing(trained, tmp_path):
    from knapsack_rl.io import read_state_file, write_state_file

    trainer, _ = trained
    path = tmp_path / "checkpoint.pt"
    good = read_state_file(
        pathlib.Path(trainer.config.out_dir) / "checkpoint.pt",
        what="checkpoint", kind="trainer-checkpoint", version=5, parts=["tensors"], more_parts="rule/",
    )  # fmt: skip
    rule_parts = {k: v for k, v in good.parts.items() if k.startswith("rule/")}
    tensors = torch.load(io.BytesIO(good.parts["tensors"]), weights_only=True)
    cases = [
        ({k: v for k, v in good.meta.items() if k != "stream"}, tensors, r"checkpoint must hold exactly \["),
        (good.meta | {"config": [1]}, tensors, r"the checkpoint has no saved config \(got list\)"),
        (
            good.meta | {"rule": good.meta["rule"] | {"name": "dapo"}},
            tensors,
            r"holds the state of rule 'dapo', not "
            r"'knapsack'",
        ),
        (good.meta | {"rule": {"name": "knapsack"}}, tensors, r"a rule's state must hold exactly 'name' and 'state'"),
        (good.meta, {k: v for k, v in tensors.items() if k != "torch_rng"}, r"checkpoint tensors must hold exactly"),
        (good.meta, [tensors], r"checkpoint tensors must hold exactly .*; got list"),
    ]
    before = _snapshot(trainer)
    for meta, part, message in cases:
        buf = io.BytesIO()
        torch.save(part, buf)
        write_state_file(path, "trainer-checkpoint", 5, meta, {"tensors": buf.getvalue(), **rule_parts})
        with pytest.raises(ValueError, match=rf"^{path}: .*{message}"):
            trainer.load_checkpoint(path)
        assert _snapshot(trainer) == before


def test_a_good_checkpoint_still_restores_every_piece_of_state(trained, tmp_path):
    trainer, cfg = trained
    resumed = Trainer(cfg)  # resumes from the checkpoint train() wrote at step 2
    assert _snapshot(resumed) == _snapshot(trainer)


def test_a_prompt_stream_state_is_checked_before_it_is_adopted():
    from knapsack_rl.rules.stream import PromptStream

    stream = PromptStream(16, seed=0)
    stream.batch(8)
    for state, message in (
        ({"epoch": 2**62, "position": 0}, r"^ckpt: epoch must be <= 1099511627776; got epoch=4611686018427387904$"),
        ({"epoch": 0, "position": 0, 1: 2}, r"^ckpt: not a prompt stream state \(keys 'epoch', 'position'\); got \["),
        ({"epoch": 0.0, "position": 0}, r"^ckpt: epoch must be an integer; got epoch=0.0$"),
    ):
        with pytest.raises(ValueError, match=message):
            stream.load_state_dict(state, source="ckpt")
        assert stream.state_dict() == {"epoch": 0, "position": 8}
