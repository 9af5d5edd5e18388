"""Does the installed verl still consume what the adapter sets? Checked when a back-end loads.

A version range (:data:`~knapsack_rl.integrations.verl.SUPPORTED_VERL`) says which verl the adapter was
tested with; this module checks the code itself, so a verl that moved one of the pieces the adapter relies
on stops the run at start-up, in one line naming the verl version and the piece, instead of training with
uniform counts or with rollouts grouped under the wrong prompt. Each check reads a method's signature or
parses its source with :mod:`ast` (no verl code runs; a few milliseconds; the same answer every time):

- **V1** (:mod:`~.hooks`): verl's ``AgentLoopWorkerTQ._run_prompt`` pops ``__rollout_n__`` per prompt (the
  counts the agent-loop manager stamps); the signatures of ``AgentLoopManagerTQ.generate_sequences``,
  ``ReplayBuffer.sample`` / ``ReplayBufferAsync.sample`` and ``CheckpointCallback.on_save`` the hooks
  override; the V1 trainer's ``_save_checkpoint`` calls the checkpoint callback's ``on_save``.
- **legacy** (:mod:`~.legacy`): ``RayPPOTrainer.fit`` draws ``batch.non_tensor_batch["uid"]``, calls
  ``self._get_gen_batch(batch)`` and then repeats the generation batch and the step's batch with
  ``.repeat(repeat_times=..., interleave=True)``, and calls ``self._update_actor(batch)`` and
  ``self._save_checkpoint()``; ``_validate`` builds its batches through ``_get_gen_batch``; the signatures of
  the four methods the subclass overrides; ``compute_advantage`` groups by ``non_tensor_batch["uid"]``;
  ``DataProto.sample_level_repeat`` exists; ``main_ppo_v0.TaskRunner.run`` builds ``RayPPOTrainer`` by name.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from knapsack_rl.integrations.verl.planner import ROLLOUT_N_KEY

V1 = "v1"
LEGACY = "legacy"
BACKENDS = (V1, LEGACY)


@dataclass(frozen=True)
class Need:
    """One thing the adapter needs verl's code to do: ``where`` (a dotted name) ``what`` (a phrase), tested by
    ``holds`` (a function of the object at ``where``)."""

    where: str
    what: str
    holds: Callable[[Any], bool]


def check_verl_contract(backend: str, version: str | None = None) -> None:
    """Raise a one-line ValueError naming verl's version if the installed verl no longer does one of the
    things ``backend`` (``"v1"`` or ``"legacy"``) relies on (module docstring). ``version`` defaults to
    ``verl.__version__``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}; got {backend!r}")
    import verl

    from knapsack_rl.integrations.verl import SUPPORTED_VERL

    version = str(verl.__version__) if version is None else version
    for need in needs(backend):
        try:
            holds = need.holds(resolve(need.where))
        except (ImportError, AttributeError, OSError, TypeError, SyntaxError) as exc:
            holds, need = False, Need(need.where, f"{need.what} (cannot read it: {type(exc).__name__})", need.holds)
        if not holds:
            raise ValueError(
                f"verl {version}: {need.where} no longer {need.what}; the knapsack adapter's {backend} back-end "
                f"relies on it (written for verl{','.join(SUPPORTED_VERL)}): install a supported verl"
            )


def needs(backend: str) -> list[Need]:
    """What ``backend`` relies on, in the order it is checked."""
    return _v1_needs() if backend == V1 else _legacy_needs()


def _v1_needs() -> list[Need]:
    v1 = "verl.trainer.ppo.v1"
    return [
        Need(f"{v1}.agent_loop_tq.AgentLoopWorkerTQ._run_prompt", f"pops {ROLLOUT_N_KEY} from each prompt",
             lambda f: any(_is_call(c, method="pop") and _first_arg(c) == ROLLOUT_N_KEY for c in _calls(f))),
        Need(f"{v1}.agent_loop_tq.AgentLoopManagerTQ.generate_sequences", "takes (self, prompts)",
             lambda f: _params(f) == ["self", "prompts"]),
        Need(f"{v1}.replay_buffer.ReplayBuffer.sample", "takes (self, global_steps, partition_id, batch_size)",
             lambda f: _params(f) == ["self", "global_steps", "partition_id", "batch_size"]),
        Need(f"{v1}.replay_buffer.ReplayBufferAsync.sample", "takes (self, global_steps, partition_id, batch_size)",
             lambda f: _params(f) == ["self", "global_steps", "partition_id", "batch_size"]),
        Need("verl.trainer.ppo.checkpoint_callback.CheckpointCallback.on_save",
             "takes (self, trainer, global_step, checkpoint_dir, ...)",
             lambda f: _params(f)[:4] == ["self", "trainer", "global_step", "checkpoint_dir"]),
        Need(f"{v1}.trainer_base.PPOTrainer._save_checkpoint", "calls self.checkpoint_callback.on_save(...)",
             lambda f: any(_is_call(c, "self.checkpoint_callback", "on_save") for c in _calls(f))),
    ]  # fmt: skip


def _legacy_needs() -> list[Need]:
    trainer = "verl.trainer.ppo.ray_trainer.RayPPOTrainer"
    return [
        Need(f"{trainer}.fit", 'draws a uid per prompt (batch.non_tensor_batch["uid"] = ...)',
             lambda f: any(_is_uid(t) for t in _assign_targets(f))),
        Need(f"{trainer}.fit", "calls self._get_gen_batch(batch)",
             lambda f: any(_is_call(c, "self", "_get_gen_batch") for c in _calls(f))),
        Need(f"{trainer}.fit", "repeats the generation batch by rollout.n (gen_batch.repeat(..., interleave=True))",
             lambda f: any(_is_repeat(c, "gen_batch") for c in _calls(f))),
        Need(f"{trainer}.fit", "repeats the step's batch by rollout.n (batch.repeat(..., interleave=True))",
             lambda f: any(_is_repeat(c, "batch") for c in _calls(f))),
        Need(f"{trainer}.fit", "calls self._update_actor(batch)",
             lambda f: any(_is_call(c, "self", "_update_actor") for c in _calls(f))),
        Need(f"{trainer}.fit", "calls self._save_checkpoint()",
             lambda f: any(_is_call(c, "self", "_save_checkpoint") for c in _calls(f))),
        Need(f"{trainer}._validate", "builds its batches with self._get_gen_batch(...)",
             lambda f: any(_is_call(c, "self", "_get_gen_batch") for c in _calls(f))),
        Need(f"{trainer}._get_gen_batch", "takes (self, batch)", lambda f: _params(f) == ["self", "batch"]),
        Need(f"{trainer}._update_actor", "takes (self, batch)", lambda f: _params(f) == ["self", "batch"]),
        Need(f"{trainer}._save_checkpoint", "takes (self)", lambda f: _params(f) == ["self"]),
        Need(f"{trainer}._validate", "takes (self, merged=...)", lambda f: _params(f) == ["self", "merged"]),
        Need("verl.trainer.ppo.ray_trainer.compute_advantage", 'groups advantages by non_tensor_batch["uid"]',
             lambda f: any(_is_uid(s) for s in _subscripts(f))),
        Need("verl.protocol.DataProto.sample_level_repeat", "takes (self, repeat_times)",
             lambda f: _params(f) == ["self", "repeat_times"]),
        Need("verl.trainer.main_ppo_v0.TaskRunner.run", "builds the trainer by the name RayPPOTrainer",
             lambda f: any(isinstance(c.func, ast.Name) and c.func.id == "RayPPOTrainer" for c in _calls(f))),
    ]  # fmt: skip


# ----------------------------------------------------------------------------- reading verl's code
def resolve(where: str) -> Any:
    """The object at a dotted name: the longest importable module, then attributes (a Ray actor class is
    read through its original class, ``__ray_actor_class__``)."""
    import importlib

    parts = where.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(getattr(obj, "__ray_actor_class__", obj), name)
        return obj
    raise ImportError(f"no module in {where!r}")


def _params(func: Any) -> list[str]:
    return [p.name for p in inspect.signature(func).parameters.values() if p.kind != p.VAR_KEYWORD]


def _tree(func: Any) -> ast.AST:
    return ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(func))))


def _calls(func: Any) -> Iterator[ast.Call]:
    return (node for node in ast.walk(_tree(func)) if isinstance(node, ast.Call))


def _subscripts(func: Any) -> Iterator[ast.Subscript]:
    return (node for node in ast.walk(_tree(func)) if isinstance(node, ast.Subscript))


def _assign_targets(func: Any) -> Iterator[ast.expr]:
    return (t for node in ast.walk(_tree(func)) if isinstance(node, ast.Assign) for t in node.targets)


def _is_call(call: ast.Call, receiver: str | None = None, method: str | None = None) -> bool:
    """``call`` is ``receiver.method(...)`` (either may be None: any)."""
    func = call.func
    if not isinstance(func, ast.Attribute):
        return False
    return (method is None or func.attr == method) and (receiver is None or ast.unparse(func.value) == receiver)


def _first_arg(call: ast.Call) -> Any:
    return call.args[0].value if call.args and isinstance(call.args[0], ast.Constant) else None


def _is_repeat(call: ast.Call, receiver: str) -> bool:
    """``receiver.repeat(repeat_times=..., interleave=True)``."""
    keywords = {k.arg: k.value for k in call.keywords}
    interleave = keywords.get("interleave")
    return (
        _is_call(call, receiver, "repeat")
        and "repeat_times" in keywords
        and isinstance(interleave, ast.Constant)
        and interleave.value is True
    )


def _is_uid(node: ast.expr) -> bool:
    """``<x>.non_tensor_batch["uid"]``."""
    return (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "non_tensor_batch"
        and isinstance(node.slice, ast.Constant)
        and node.slice.value == "uid"
    )
