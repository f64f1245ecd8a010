"""What every run shares: device, seeds, timers, peak memory, the environment record, atomic files, the run's shared
tokenizer and the output-folder policy.

`hf-evolution compare`, `hf-evolution probe`, both example scripts and the benchmarks set up their runs through this
module, so that `--overwrite`, `--resume`, `--device` and `--seed` mean the same everywhere.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import os
import platform
import re
import resource
import shutil
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

import torch

MANIFEST = ".hf-evolution-run.json"
# Folders that Trainer names itself; a kill can leave a new one before the manifest lists it.
TRAINER_PATTERNS = ("checkpoint-*", "tmp-checkpoint-*")
# What a user can get wrong: bad values, missing or foreign files and folders, Hub ids that do not resolve (datasets'
# and huggingface_hub's errors are OSErrors), an optional dependency not installed. The command line prints these as
# one line and exits with 2.
USER_ERRORS = (ValueError, OSError, ModuleNotFoundError)
ATOMIC_TEMPORARIES = ".*.tmp-*"  # what a kill in the middle of `write_text` leaves


# --- device, seeds, timers, memory ----------------------------------------------------------------------------------


def one_line(error: BaseException) -> str:
    """An error message on one line (transformers' and the Hub's messages span several)."""
    return " ".join(str(error).split())


def pick_device(choice: str = "auto") -> torch.device:
    """`auto` (CUDA when torch sees one), `cpu` or `cuda`; `cuda` without a device is refused."""
    if choice not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {choice!r}.")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but torch sees no CUDA device; use --device cpu or auto.")
    return torch.device("cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu")


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch (all devices), as transformers' `set_seed`."""
    from transformers import set_seed

    set_seed(seed)


MAX_SEED = 2**32 - 1  # NumPy's bound, which transformers' `set_seed` applies


def check_seed(seed: int, flag: str = "--seed") -> int:
    """Refuse a seed `set_seed` would refuse, naming the flag, before any work."""
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{flag} must be between 0 and {MAX_SEED} (2**32 - 1), got {seed}.")
    return seed


def synchronize(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], object], repeats: int = 3, *, warmup: int = 1, device: torch.device | None = None):
    """The fastest of `repeats` calls after `warmup` calls, in seconds: on a shared machine noise only adds time."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


class PeakMemory:
    """Peak memory while the block runs: the CUDA allocator's peak on GPU; on Linux CPUs the process's resident
    high-water mark, reset on entry through /proc/self/clear_refs (elsewhere the lifetime peak)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.megabytes = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        else:
            with contextlib.suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.megabytes = torch.cuda.max_memory_allocated() / 2**20
            return
        status = Path("/proc/self/status")
        match = re.search(r"VmHWM:\s+(\d+) kB", status.read_text()) if status.exists() else None
        kilobytes = int(match.group(1)) if match else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.megabytes = kilobytes / 1024


def cache_bytes(cache) -> int:
    """Bytes of every tensor a `transformers.Cache` holds: keys and values of attention layers, states of recurrent
    layers (each tensor once, however many attributes point at it)."""
    tensors = {}
    for layer in cache.layers:
        for value in vars(layer).values():
            items = (
                value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
            )
            tensors.update({id(item): item for item in items if isinstance(item, torch.Tensor)})
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())


# --- what produced a figure -----------------------------------------------------------------------------------------


def environment() -> dict:
    """Versions and machine, so that every figure can be traced to what produced it."""
    import datasets
    import tokenizers
    import transformers

    from . import __version__

    return {
        "versions": {
            "hf_evolution": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "datasets": datasets.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        },
        "date": datetime.now().isoformat(timespec="seconds"),
    }


# --- atomic files ---------------------------------------------------------------------------------------------------


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write through a temporary file in the same folder and rename it: a reader (or a resume) never sees half a
    file, whenever the process is killed."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # matches ATOMIC_TEMPORARIES
    temporary.write_text(text)
    os.replace(temporary, path)
    return path


def finite_or_null(payload):
    """`payload` with every NaN or infinity replaced by None: JSON has no such numbers, and `json.dumps` would write
    the bare `NaN` and `Infinity` that other readers refuse."""
    if isinstance(payload, float):
        return payload if math.isfinite(payload) else None
    if isinstance(payload, dict):
        return {key: finite_or_null(value) for key, value in payload.items()}
    if isinstance(payload, (list, tuple)):
        return [finite_or_null(value) for value in payload]
    return payload


def write_json(path: str | os.PathLike, payload) -> Path:
    """Strict JSON, atomically: a figure that is not a number (a diverged run) is written as null."""
    return write_text(path, json.dumps(finite_or_null(payload), indent=2, default=str, allow_nan=False) + "\n")


# --- the run's tokenizer --------------------------------------------------------------------------------------------


def shared_tokenizer(
    source: str,
    train_split,
    *,
    vocab_size: int | None = None,
    folder: str | os.PathLike | None = None,
    main_process_first=contextlib.nullcontext,
    should_save: bool = True,
):
    """The one tokenizer every model of a run reads: `source` is a kind (`bpe`, `word`, `char`), trained on the train
    split, or a tokenizer folder / Hub id. A trained one is saved in `folder`, and a resumed run, or another process
    of a distributed run, loads that copy instead of training its own."""
    from .tokenization import TOKENIZER_KINDS, load_tokenizer, train_tokenizer

    if source not in TOKENIZER_KINDS:
        return load_tokenizer(source)
    with main_process_first():
        if folder is not None and (Path(folder) / "tokenizer.json").is_file():
            return load_tokenizer(folder)
        tokenizer = train_tokenizer(train_split, source, vocab_size=vocab_size)
        if folder is not None and should_save:
            tokenizer.save_pretrained(folder)
        return tokenizer


# --- the output folder ----------------------------------------------------------------------------------------------


class RunFolder:
    """An output folder and the manifest that tells what in it this package wrote.

    Every run claims the names it writes in `.hf-evolution-run.json` before writing them. `--overwrite` then deletes
    only what the manifest (or Trainer's `checkpoint-*` naming) accounts for, never the folder itself, and refuses a
    folder holding anything else; a run that fails before it has finished anything removes what it wrote, so that the
    corrected command runs without `--overwrite`."""

    def __init__(self, path: Path, created: bool, patterns: tuple[str, ...] = ()):
        self.path = path
        self.created = created
        self.patterns = patterns
        self.progress = False

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def manifest(self) -> dict:
        return read_manifest(self.path) or {"tool": "hf_evolution", "entries": [], "patterns": list(self.patterns)}

    def claim(self, *names: str) -> None:
        """Record top-level names as this package's before they are written."""
        manifest = self.manifest()
        new = sorted(set(manifest["entries"]) | {name for name in names if name != MANIFEST})
        if new != manifest["entries"] or not self.manifest_path.exists():
            manifest["entries"] = new
            write_json(self.manifest_path, manifest)

    def claim_listing(self) -> None:
        """Claim every top-level entry the folder holds now (for what Trainer writes on its own)."""
        self.claim(*(entry.name for entry in self.path.iterdir()))

    def mark_progress(self) -> None:
        """Something worth keeping now exists (a finished model, a checkpoint): a later failure keeps the folder."""
        self.progress = True

    def discard(self) -> None:
        """Remove what this run wrote (and the folder, if it created it and nothing else is left)."""
        manifest = read_manifest(self.path)
        if manifest is None:
            return
        for entry in owned_entries(self.path, manifest):
            remove(entry)
        self.manifest_path.unlink(missing_ok=True)
        if self.created and not any(self.path.iterdir()):
            self.path.rmdir()

    @contextlib.contextmanager
    def discarded_on_failure(self):
        """Undo a fresh run that fails with an exception before it has finished anything; a kill or Ctrl-C keeps
        what was written, for `--resume`."""
        try:
            yield self
        except Exception:
            if not self.progress:
                self.discard()
            raise


def read_manifest(folder: Path) -> dict | None:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("tool") == "hf_evolution" else None


def owned_entries(folder: Path, manifest: dict) -> list[Path]:
    names = set(manifest.get("entries", []))
    patterns = (*manifest.get("patterns", ()), ATOMIC_TEMPORARIES)
    return [
        entry
        for entry in sorted(folder.iterdir())
        if entry.name != MANIFEST
        and (entry.name in names or any(fnmatch.fnmatch(entry.name, pattern) for pattern in patterns))
    ]


def remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink(missing_ok=True)


def is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def open_run_folder(
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    resume: bool = False,
    protected: Iterable[str | os.PathLike | None] = (),
    patterns: tuple[str, ...] = (),
    resume_needs: str | None = None,
    dry_run: bool = False,
) -> RunFolder:
    """The output-folder policy of every command, applied after every other argument has been checked.

    - A new or empty folder is created and claimed.
    - `resume`: the folder must hold a run of ours (and `resume_needs`, e.g. results.json); nothing is deleted.
    - Otherwise a folder holding a run is refused, unless `overwrite`: then what the run wrote is deleted, and only
      that. A folder holding files this package did not write is refused even with `overwrite`, and so is one that
      holds the working directory or an input (`protected`: data files, tokenizer and model folders).
    `dry_run` checks without touching anything (for the processes of a distributed run that do not own the folder).
    """
    path = Path(path).expanduser()
    if overwrite and resume:
        raise ValueError("Choose one of --overwrite (start again) and --resume (continue the run in the folder).")
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} is a file, not a folder; choose another output folder.")
    manifest = read_manifest(path) if path.is_dir() else None
    if resume:
        if manifest is None or (resume_needs and not (path / resume_needs).exists()):
            raise FileNotFoundError(
                f"Nothing to resume in {path}: it holds no run of hf_evolution"
                + (f" with a {resume_needs}" if resume_needs else "")
                + ". Start a run there first."
            )
        folder = RunFolder(path, created=False, patterns=patterns)
        folder.progress = True  # a resumed run never discards what the earlier part wrote
        return folder
    owned = check_output_folder(path, overwrite=overwrite, protected=protected, resumable=True)
    if not dry_run:
        for entry in owned:
            remove(entry)
    created = not path.exists()
    if dry_run:
        return RunFolder(path, created=created, patterns=patterns)
    path.mkdir(parents=True, exist_ok=True)
    folder = RunFolder(path, created=created, patterns=patterns)
    folder.manifest_path.unlink(missing_ok=True)
    folder.claim()
    return folder


def check_output_folder(
    path: Path, *, overwrite: bool, protected: Iterable[str | os.PathLike | None] = (), resumable: bool = False
) -> list[Path]:
    """Refuse a file, a folder holding anything hf_evolution did not write, an earlier output without `overwrite`,
    and an overwrite that would delete the working directory or an input (`protected`); return what an overwrite
    replaces. Every command checks its output folder so, before any work."""
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} is a file, not a folder; choose another output folder.")
    if not resumable:  # the whole folder is replaced: it may not hold an input
        for item in (Path(item).expanduser() for item in protected if item):
            if is_within(item.resolve(), path.resolve()):
                raise ValueError(f"{path} is or holds the input {item}; choose another output folder.")
    entries = [entry for entry in path.iterdir() if entry.name != MANIFEST] if path.is_dir() else []
    if not entries:
        return []
    manifest = read_manifest(path)
    owned = owned_entries(path, manifest) if manifest is not None else []
    foreign = sorted(entry.name for entry in entries if entry not in owned)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise FileExistsError(
            f"{path} holds files that hf_evolution did not write ({shown}); it never deletes those. Choose a new "
            "or empty output folder."
        )
    if not overwrite:
        raise FileExistsError(
            f"{path} already holds {'a run' if resumable else 'an output of hf_evolution'}. Pass --overwrite to "
            f"replace it{', --resume to continue it' if resumable else ''}, or choose another output folder."
        )
    guarded = [Path.cwd().resolve(), *(Path(item).expanduser().resolve() for item in protected if item)]
    for entry in [path, *owned] if not resumable else owned:
        for kept in guarded:
            if is_within(kept, entry.resolve()):
                raise ValueError(
                    f"--overwrite would delete {entry}, which holds {kept} (the working directory or an input of "
                    "this run); choose another output folder."
                )
    return owned


def write_folder_atomically(folder: Path, write: Callable[[Path], None]) -> Path:
    """`write(temporary)` fills a temporary sibling folder, which then takes the place of `folder` (checked with
    `check_output_folder` first): a reader, or a kill, never leaves half an output. The manifest lists every entry, so
    a later `--overwrite` knows them as ours; an earlier `folder` is moved aside and deleted once the new one is in."""
    folder = Path(folder).expanduser()
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    if temporary.exists():  # left by a killed run of a process with this id
        shutil.rmtree(temporary)
    temporary.mkdir()
    try:
        write(temporary)
        RunFolder(temporary, created=True).claim_listing()
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if folder.is_dir() and any(folder.iterdir()):
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        os.rename(folder, old)
        os.rename(temporary, folder)
        shutil.rmtree(old)
    else:
        os.replace(temporary, folder)  # a missing or empty folder is replaced in one step
    # What an earlier write into `folder` killed midway left beside it (its names are ours): a folder filled under a
    # temporary name, or an earlier output moved aside; the new output in place supersedes both.
    for stale in folder.parent.glob(f".{folder.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in folder.parent.glob(f".{folder.name}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return folder


def default_run_dir(command: str) -> Path:
    return Path("runs") / f"{command}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
