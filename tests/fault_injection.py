"""Run a command of ours and kill it with SIGKILL at a chosen moment, without timing: the process kills itself when
the chosen call happens for the n-th time. Used by the tests of resume after a kill.

    python tests/fault_injection.py MOMENT N -- compare --preset smoke ...
    python tests/fault_injection.py MOMENT N -- examples/run_clm.py --output_dir ...

MOMENT is one of MOMENTS below; N counts the calls of this process. A moment that never comes lets the command finish.
"""

import os
import runpy
import signal
import sys
from pathlib import Path


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def kill_on_call(owner, name: str, n: int, *, before: bool, partial=None, counted=None):
    """Replace `owner.name` by a wrapper that kills the process at the n-th call (of those `counted(*args)` accepts),
    before or after the real call; `partial(*args)` runs first when given (e.g. writes half a file)."""
    original = getattr(owner, name)
    calls = [0]

    def wrapper(*args, **kwargs):
        if counted is not None and not counted(*args, **kwargs):
            return original(*args, **kwargs)
        calls[0] += 1
        if calls[0] == n and before:
            if partial is not None:
                partial(*args, **kwargs)
            die()
        result = original(*args, **kwargs)
        if calls[0] == n:
            die()
        return result

    setattr(owner, name, wrapper)


def half_written(path, text, *args, **kwargs):
    """What a kill in the middle of a plain write leaves: the first half of the file under its temporary name."""
    path = Path(path)
    path.with_name(f".{path.name}.tmp-{os.getpid()}").write_text(text[: len(text) // 2])


def final_save(trainer, output_dir=None, *args, **kwargs) -> bool:
    return output_dir is None or output_dir == trainer.args.output_dir


def install(moment: str, n: int) -> None:
    import transformers

    import hf_evolution.compare.experiment
    import hf_evolution.runs
    from hf_evolution.training.trainer import EvolutionTrainer

    moments = {
        # inside a checkpoint save: weights written, optimizer, RNG and trainer state not yet
        "inside-checkpoint": lambda: kill_on_call(
            transformers.Trainer, "_save_optimizer_and_scheduler", n, before=True
        ),
        # right after a checkpoint (and Trainer's rotation of older ones) is complete
        "after-checkpoint": lambda: kill_on_call(EvolutionTrainer, "_save_checkpoint", n, before=False),
        # before an optimizer step: mid-training, between checkpoints
        "training-step": lambda: kill_on_call(transformers.Trainer, "training_step", n, before=True),
        # in the middle of an atomic write (results.json, the manifest, a checkpoint's run state)
        "inside-write": lambda: kill_on_call(hf_evolution.runs, "write_text", n, before=True, partial=half_written),
        # after an evaluation (the curve, the final figures of a model)
        "after-evaluate": lambda: kill_on_call(transformers.Trainer, "evaluate", n, before=False),
        # after a model's results are written, before the next model (or seed) starts
        "between-models": lambda: kill_on_call(hf_evolution.compare.experiment, "write_outputs", n, before=False),
        # an output folder of export/quantize/convert written in full under its temporary name, not yet in place
        "inside-folder-write": lambda: kill_on_call(hf_evolution.runs.RunFolder, "claim_listing", n, before=True),
        # inside the final save of a model into its output folder (not a checkpoint's), before its card
        "inside-final-save": lambda: kill_on_call(
            transformers.Trainer, "save_model", n, before=False, counted=final_save
        ),
    }
    moments[moment]()


def main() -> None:
    moment, n, separator, *command = sys.argv[1:]
    assert separator == "--", __doc__
    install(moment, int(n))
    if command[0].endswith(".py"):
        sys.argv = command
        runpy.run_path(command[0], run_name="__main__")
    else:
        from hf_evolution.cli import main as cli

        sys.exit(cli(command))


if __name__ == "__main__":
    main()
