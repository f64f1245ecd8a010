"""What every run shares: device, seeds, timers, peak memory, the environment record, atomic files, the run's shared
tokenizer and the output-folder policy.

`hf-evolution compare`, `hf-evolution probe`, both example scripts and the benchmarks set up their runs through this
module, so that `--overwrite`, `--resume`, `--device` and `--seed` mean the same everywhere.
"""

from __future__ import annotations

import contextlib
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
from pathlib import Path, PurePosixPath

import torch
from huggingface_hub.errors import StrictDataclassError

MANIFEST = ".hf-evolution-run.json"
# What a user can get wrong: bad values (config fields are refused by huggingface_hub's `@strict` validation, as
# transformers' own configs are, with a StrictDataclassError), missing or foreign files and folders, Hub ids that do not
# resolve (datasets' and huggingface_hub's errors are OSErrors), an optional dependency not installed. The command line
# prints these as one line and exits with 2.
USER_ERRORS = (ValueError, StrictDataclassError, OSError, ModuleNotFoundError)


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
    """The fastest of `repeats` calls after `warmup` calls, in seconds: on a shared machine noise only adds time.

    Not `torch.utils.benchmark.Timer`: it decides the number of calls itself (`timeit(1)` makes 3, `blocked_autorange`
    at least 2, one of them untimed) and times on one thread unless told, while the speed probe times a slow training
    step (an optimizer step per call) exactly once, and a generation call can take seconds."""
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
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # beside a claimed file, ours (`is_companion`)
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
    run_folder: RunFolder | None = None,
):
    """The one tokenizer every model of a run reads: `source` is a kind (`bpe`, `word`, `char`), trained on the train
    split, or a tokenizer folder / Hub id. A trained one is saved in `folder`, and a resumed run, or another process
    of a distributed run, loads that copy instead of training its own; `run_folder` writes it as a folder of the run
    (see `RunFolder.write_folder`)."""
    from .tokenization import TOKENIZER_KINDS, load_tokenizer, train_tokenizer

    if source not in TOKENIZER_KINDS:
        return load_tokenizer(source)
    with main_process_first():
        if folder is not None and (Path(folder) / "tokenizer.json").is_file():
            return load_tokenizer(folder)
        tokenizer = train_tokenizer(train_split, source, vocab_size=vocab_size)
        if folder is not None and should_save:
            if run_folder is not None:  # a folder of its own in the run: written whole, claimed file by file
                run_folder.write_folder(folder, tokenizer.save_pretrained)
            else:
                tokenizer.save_pretrained(folder)
        return tokenizer


# --- the output folder ----------------------------------------------------------------------------------------------
#
# One rule: nothing is deleted that the folder's manifest does not name. The manifest names the paths (relative, at
# any depth) that this package claimed before writing them. A claimed folder is ours as a folder only: what it holds
# is ours as far as it is claimed too. Some folders are claimed whole, because a library fills them with names of its
# own: Trainer's `checkpoint-<step>` (claimed by its exact name before Trainer writes it), TensorBoard's `runs`, and
# the temporary folders of atomic writes. Beside a claimed file, its atomic-write temporaries (`.NAME.tmp-<pid>`) are
# ours, and beside a claimed `model.safetensors.index.json`, the shards it indexes. Symbolic links inside a folder
# are never followed and never ours.


class RunFolder:
    """An output folder and the manifest that tells what in it this package wrote.

    `--overwrite` deletes what the manifest names and refuses a folder that holds anything else, at any depth; a run
    that fails before it has finished anything removes what it wrote, so that the corrected command runs without
    `--overwrite`."""

    def __init__(self, path: Path, created: bool):
        self.path = path
        self.created = created
        self.progress = False

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def manifest(self) -> dict:
        return read_manifest(self.path) or new_manifest()

    def claim(self, *paths: str | os.PathLike, whole: bool = False) -> None:
        """Record paths (relative to the folder, or absolute inside it) as this package's before they are written,
        with the folders above them; `whole`: folders whose every content is ours."""
        manifest = self.manifest()
        entries, wholes = set(manifest["entries"]), set(manifest["whole"])
        for path in paths:
            relative = self.relative(path)
            (wholes if whole else entries).add(relative)
            entries.update(parent.as_posix() for parent in PurePosixPath(relative).parents if parent.name)
        entries.discard(MANIFEST)
        changed = sorted(entries) != manifest["entries"] or sorted(wholes) != manifest["whole"]
        if changed or not self.manifest_path.exists():
            write_json(self.manifest_path, {**manifest, "entries": sorted(entries), "whole": sorted(wholes)})

    def claim_listing(self) -> None:
        """Claim everything the folder holds now: only for a folder this package filled alone."""
        walked = os.walk(self.path)
        self.claim(*(Path(root, name) for root, folders, files in walked for name in (*folders, *files)))

    def write_folder(self, path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
        """`write(temporary)` fills a temporary folder (claimed whole), whose listing is claimed under `path` before
        it takes `path`'s place: a kill never leaves an unclaimed or half-written folder."""
        target = self.path / self.relative(path)
        temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        self.claim(temporary, whole=True)
        remove_owned(temporary, {**new_manifest(), "whole": ["."]})
        temporary.mkdir(parents=True)
        write(temporary)
        if os.path.lexists(target):
            self.remove(target)
        self.claim(target, *(target / entry.relative_to(temporary) for entry in sorted(temporary.rglob("*"))))
        os.replace(temporary, target)
        self.forget(temporary)
        return target

    def remove(self, path: str | os.PathLike) -> None:
        """Delete what the manifest names at `path` (a file, or a folder and what of it is ours), and forget it."""
        target = self.path / self.relative(path)
        owned, _ = classify(self.path, self.manifest())
        for entry, kind in reversed(owned):
            if is_within(entry, target):
                delete(entry, kind)
        self.forget(target)

    def forget(self, path: str | os.PathLike) -> None:
        """Drop the claims at and under `path` that nothing on disk answers to any more."""
        relative, manifest = self.relative(path), self.manifest()

        def kept(name: str) -> bool:
            return not (name == relative or name.startswith(relative + "/")) or os.path.lexists(self.path / name)

        write_json(
            self.manifest_path,
            {
                **manifest,
                "entries": list(filter(kept, manifest["entries"])),
                "whole": list(filter(kept, manifest["whole"])),
            },
        )

    def relative(self, path: str | os.PathLike) -> str:
        path = Path(path)
        if is_within(path, self.path):
            path = path.relative_to(self.path)
        elif path.is_absolute():
            path = path.relative_to(self.path.absolute())
        relative = path.as_posix()
        if relative in ("", ".") or ".." in PurePosixPath(relative).parts:
            raise ValueError(f"{path} is not a path inside {self.path}.")
        return relative

    def mark_progress(self) -> None:
        """Something worth keeping now exists (a finished model, a checkpoint): a later failure keeps the folder."""
        self.progress = True

    def discard(self) -> None:
        """Remove what this run wrote (and the folder, if it created it and nothing else is left)."""
        manifest = read_manifest(self.path)
        if manifest is None:
            return
        remove_owned(self.path, manifest)
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


MANIFEST_VERSION = 2  # 1 named top-level names only, and owned folders whole


def new_manifest() -> dict:
    return {"tool": "hf_evolution", "version": MANIFEST_VERSION, "entries": [], "whole": []}


def read_manifest(folder: Path) -> dict | None:
    path = Path(folder) / MANIFEST
    if path.is_symlink() or not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(manifest, dict) or manifest.get("tool") != "hf_evolution":
        return None
    lists = {key: sorted(str(name) for name in manifest.get(key, [])) for key in ("entries", "whole")}
    return {**manifest, **lists}


def classify(folder: Path, manifest: dict | None) -> tuple[list[tuple[Path, str]], list[Path]]:
    """What `folder` holds, split into what the manifest makes ours, each with its kind (`file`, `whole`, `folder`)
    in the order a walk meets it, and what is not ours (each foreign path once, at its top)."""
    entries, wholes = (set(manifest["entries"]), set(manifest["whole"])) if manifest else (set(), set())
    owned, foreign = [], []

    def visit(directory: Path, prefix: str) -> None:
        if prefix == "" and "." in wholes:  # a temporary folder of an atomic write: all of it
            owned.extend(
                (entry, "whole" if entry.is_dir() and not entry.is_symlink() else "file")
                for entry in directory.iterdir()
                if entry.name != MANIFEST
            )
            return
        for entry in sorted(directory.iterdir()):
            relative = prefix + entry.name
            if relative == MANIFEST:
                continue
            if entry.is_symlink():
                foreign.append(entry)
            elif entry.is_dir() and relative in wholes:
                owned.append((entry, "whole"))
            elif entry.is_dir() and relative in entries:
                owned.append((entry, "folder"))
                visit(entry, relative + "/")
            elif not entry.is_dir() and (relative in entries or is_companion(entry.name, prefix, entries)):
                owned.append((entry, "file"))
            else:
                foreign.append(entry)

    if folder.is_dir():
        visit(folder, "")
    return owned, foreign


def is_companion(name: str, prefix: str, entries: set[str]) -> bool:
    """A file that a claimed file brings beside it under a name chosen at write time: its atomic-write temporary
    (`.NAME.tmp-<pid>`, see `write_text`), or a shard of a claimed safetensors index."""
    temporary = re.fullmatch(r"\.(.+)\.tmp-\d+", name)
    if temporary:
        return prefix + temporary.group(1) in entries
    shard = re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", name)
    return bool(shard) and prefix + "model.safetensors.index.json" in entries


def delete(entry: Path, kind: str) -> None:
    """Delete one of our paths: a file, a folder claimed whole, or a claimed folder once it is empty (one that still
    holds something not ours stays)."""
    if kind == "whole":
        shutil.rmtree(entry)
    elif kind == "folder":
        with contextlib.suppress(OSError):
            entry.rmdir()
    else:
        entry.unlink(missing_ok=True)


def remove_owned(folder: Path, manifest: dict) -> list[Path]:
    """Delete what `manifest` makes ours in `folder`, deepest first; return what was not ours (kept)."""
    owned, foreign = classify(folder, manifest)
    for entry, kind in reversed(owned):
        delete(entry, kind)
    if folder.is_dir() and "." in manifest["whole"] and not foreign:
        (folder / MANIFEST).unlink(missing_ok=True)
        folder.rmdir()
    return foreign


def is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def open_run_folder(
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    resume: bool = False,
    protected: Iterable[str | os.PathLike | None] = (),
    resume_needs: str | None = None,
    resume_flag: str | None = "--resume",
    dry_run: bool = False,
) -> RunFolder:
    """The output-folder policy of every command, applied after every other argument has been checked.

    - A new or empty folder is created and claimed.
    - `resume`: the folder must hold a run of ours (and `resume_needs`, e.g. results.json); nothing is deleted.
    - Otherwise a folder holding a run is refused, unless `overwrite`: then what the run wrote is deleted, and only
      that (see `check_output_folder`). `resume_flag` is how the command continues a run, for the refusal to name.
    `dry_run` checks without touching anything (for the processes of a distributed run that do not own the folder).
    """
    path = Path(path).expanduser()
    if overwrite and resume:
        raise ValueError(
            f"Choose one of --overwrite (start again) and {resume_flag} (continue the run in the folder)."
        )
    check_is_folder(path)
    if resume:
        if read_manifest(path) is None or (resume_needs and not (path / resume_needs).exists()):
            raise FileNotFoundError(
                f"Nothing to resume in {path}: it holds no run of hf_evolution"
                + (f" with a {resume_needs}" if resume_needs else "")
                + ". Start a run there first."
            )
        folder = RunFolder(path, created=False)
        folder.progress = True  # a resumed run never discards what the earlier part wrote
        return folder
    owned = check_output_folder(
        path, overwrite=overwrite, protected=protected, resumable=True, resume_flag=resume_flag
    )
    created = not path.exists()
    if dry_run:
        return RunFolder(path, created=created)
    for entry, kind in reversed(owned):
        delete(entry, kind)
    path.mkdir(parents=True, exist_ok=True)
    folder = RunFolder(path, created=created)
    write_json(folder.manifest_path, new_manifest())
    return folder


def check_is_folder(path: Path) -> None:
    if path.is_symlink() and not path.exists():
        raise FileNotFoundError(f"{path} is a symbolic link to {os.readlink(path)}, which does not exist.")
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} is a file, not a folder; choose another output folder.")


def check_output_folder(
    path: str | os.PathLike,
    *,
    overwrite: bool,
    protected: Iterable[str | os.PathLike | None] = (),
    resumable: bool = False,
    resume_flag: str | None = None,
) -> list[tuple[Path, str]]:
    """Every command checks its output folder so, before any work; return what an overwrite deletes.

    Refused: a file or a dangling link; a folder holding anything the manifest does not name; an earlier output
    without `overwrite`; and an overwrite that would delete the working directory or an input (`protected`: data
    files, tokenizer and model folders), or anything inside an input. `resumable` outputs (run folders) keep the
    folder and delete what the run wrote in it; the others are replaced whole, so they may not hold an input at all.
    A symbolic link to a folder stands for that folder."""
    path = Path(path).expanduser()
    check_is_folder(path)
    real, cwd = path.resolve(), Path.cwd().resolve()
    guarded = [Path(item).expanduser().resolve() for item in protected if item]
    if not resumable:  # the whole folder is replaced
        for kept in (*guarded, cwd):
            if is_within(kept, real):
                what = "the working directory" if kept == cwd else f"the input {kept}"
                raise ValueError(f"{path} is or holds {what}, which the output would replace; choose another folder.")
    manifest = read_manifest(real)
    owned, foreign = classify(real, manifest)
    if foreign:
        names = [entry.relative_to(real).as_posix() for entry in foreign]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        if manifest is not None and manifest.get("version") != MANIFEST_VERSION:
            raise FileExistsError(
                f"{path} was written by an earlier hf_evolution, whose manifest does not name every file it wrote "
                f"({shown} are not named); it never deletes those. Delete the folder yourself, or choose another."
            )
        raise FileExistsError(
            f"{path} holds files that hf_evolution did not write ({shown}); it never deletes those. Choose a new "
            "or empty output folder."
        )
    if not owned:
        return []
    if not overwrite:
        also = f", {resume_flag} to continue it" if resumable and resume_flag else ""
        raise FileExistsError(
            f"{path} already holds {'a run' if resumable else 'an output of hf_evolution'}. Pass --overwrite to "
            f"replace it{also}, or choose another output folder."
        )
    if real in guarded:
        raise ValueError(f"--overwrite would delete the input {path} (it is also the output); choose another folder.")
    for entry, _ in owned:
        for kept in (*guarded, cwd):
            if is_within(kept, entry.resolve()):
                raise ValueError(
                    f"--overwrite would delete {entry}, which is or holds {kept} (the working directory or an input "
                    "of this run); choose another output folder."
                )
    return owned


def write_folder_atomically(folder: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """`write(temporary)` fills a temporary sibling folder, which then takes the place of `folder` (checked with
    `check_output_folder` first): a reader, or a kill, never meets half an output. Its manifest lists every entry,
    so a later `--overwrite` knows them as ours; an earlier `folder` is moved aside and deleted once the new one is
    in. Siblings are touched only by the exact names of this scheme, and only when their manifest says they are ours."""
    given = Path(folder).expanduser()
    folder = given.resolve()  # `.`, `..` and a link to a folder: the folder itself
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    remove_stale_sibling(temporary, folder.name)
    if os.path.lexists(temporary):
        raise FileExistsError(f"{temporary} is in the way and is not hf_evolution's; move it, then run again.")
    temporary.mkdir()
    write_json(temporary / MANIFEST, {**new_manifest(), "whole": ["."]})  # all ours, until it is complete
    try:
        write(temporary)
        listed = RunFolder(temporary, created=True)
        listed.claim_listing()
        write_json(listed.manifest_path, {**listed.manifest(), "whole": []})  # complete: ours by its listing
    except BaseException:
        remove_owned(temporary, {**new_manifest(), "whole": ["."]})
        raise
    if folder.is_dir() and any(folder.iterdir()):
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        remove_stale_sibling(old, folder.name)
        os.rename(folder, old)
        os.rename(temporary, folder)
        remove_stale_sibling(old, folder.name)
    else:
        os.replace(temporary, folder)  # a missing or empty folder is replaced in one step
    # What an earlier write into `folder`, killed midway, left beside it: a folder filled under a temporary name, or
    # an earlier output moved aside; the new output supersedes both.
    for sibling in folder.parent.iterdir():
        remove_stale_sibling(sibling, folder.name)
    return given


def remove_stale_sibling(sibling: Path, name: str) -> None:
    """Delete `sibling` if it is one of `write_folder_atomically`'s own folders for `name` (by its exact name and its
    manifest), keeping anything in it that the manifest does not name."""
    if not re.fullmatch(rf"\.{re.escape(name)}\.(tmp|old)-\d+", sibling.name) or sibling.is_symlink():
        return
    manifest = read_manifest(sibling) if sibling.is_dir() else None
    if manifest is None:
        return
    if not remove_owned(sibling, manifest) and sibling.is_dir():
        (sibling / MANIFEST).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            sibling.rmdir()


def default_run_dir(command: str) -> Path:
    return Path("runs") / f"{command}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
