"""Crash-test harness: kill -9 a `featstore` command at chosen moments, rerun it, compare.

For one operation (a real `featstore ...` process) the harness

1. runs it once cleanly into an empty target and keeps the result as the *reference*
   (a normalised tree: every file's bytes and mode, JSON files with time fields
   removed), its duration and how many *events* (files appearing, epochs ending) it
   went through;
2. for each kill point, starts the same command on a fresh target, sends SIGKILL to its
   process group at that point, checks what a reader sees right then (nothing that reads
   as complete may differ from the reference), reruns the command to completion and
   asserts the final tree equals the reference.

Kill points are drawn from a seeded RNG, so a run is reproducible in its choices
(timing still varies from run to run): *event* points kill once the k-th event has been
seen on disk (polled), *time* points kill a uniform fraction in [5 %, 95 %] of the clean
run's active time after the target first appears. See docs/crash-testing.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

#: Every child runs with one math thread: the same arithmetic in the clean run and the
#: reruns, and a fair share of a small CI machine.
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
             "TRANSFORMERS_OFFLINE": "1"}
#: The seed of the kill points; FEATSTORE_CRASH_SEED=N draws other points.
DEFAULT_SEED = 20240
#: A file naming every kill made (op, point, state left), one JSON line each, if set.
LOG_ENV = "FEATSTORE_CRASH_LOG"

Tree = dict[str, tuple]


# -- trees -----------------------------------------------------------------------------
def tree(target: Path, normalise: Callable[[str, bytes], Any] | None = None) -> Tree:
    """Every folder and file under ``target``: relative path -> (kind, mode, content).

    ``content`` is the sha256 of the bytes, or whatever ``normalise(relpath, bytes)``
    returns for files whose bytes may legitimately differ between runs (it returns None
    for the others).
    """
    out: Tree = {}
    if not target.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(target):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(target).as_posix()
            st = p.lstat()
            if stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
                continue
            data = p.read_bytes()
            norm = normalise(rel, data) if normalise else None
            content = norm if norm is not None else hashlib.sha256(data).hexdigest()
            out[rel] = ("file", stat.S_IMODE(st.st_mode), content)
    return out


def subtree(t: Tree, prefix: str) -> Tree:
    """The entries of ``t`` under the folder ``prefix`` (paths kept as they are)."""
    return {k: v for k, v in t.items() if k == prefix or k.startswith(prefix + "/")}


def tree_diff(reference: Tree, got: Tree, limit: int = 12) -> str:
    """What differs, in a few lines: missing, extra and changed paths (a folder that is
    missing or extra as a whole is named once, with the number of entries in it)."""
    missing = _tops(set(reference) - set(got))
    extra = _tops(set(got) - set(reference))
    changed = sorted(k for k in set(reference) & set(got) if reference[k] != got[k])
    parts = [f"{name} ({len(paths)}): {paths[:limit]}"
             for name, paths in (("missing", missing), ("extra", extra), ("changed", changed))
             if paths]
    return "; ".join(parts) or "no difference"


def _tops(paths: set[str]) -> list[str]:
    """``paths`` without those whose folder is among them; folders get an entry count."""
    tops = sorted(p for p in paths if p.rpartition("/")[0] not in paths)
    return [t + (f"/ ({n} entries)" if (n := sum(p.startswith(t + "/") for p in paths)) else "")
            for t in tops]


def listing(target: Path, limit: int = 40) -> str:
    """What lies on disk under ``target`` (path and size), for failure messages."""
    if not target.exists():
        return f"{target}: absent"
    rows = []
    for dirpath, _, filenames in os.walk(target):
        for name in sorted(filenames):
            p = Path(dirpath) / name
            rows.append(f"{p.relative_to(target).as_posix()} ({p.lstat().st_size} B)")
    shown = rows[:limit] + ([f"... and {len(rows) - limit} more"] if len(rows) > limit else [])
    return f"{target} holds {len(rows)} files: " + ", ".join(shown)


def _drop(obj: Any, path: tuple[str, ...]) -> None:
    """Delete the JSON field at ``path`` from ``obj`` ('*' matches every list item)."""
    if not path:
        return
    head, rest = path[0], path[1:]
    if head == "*" and isinstance(obj, list):
        for item in obj:
            _drop(item, rest)
    elif isinstance(obj, dict) and head in obj:
        if rest:
            _drop(obj[head], rest)
        else:
            del obj[head]


def json_normaliser(pattern: str, volatile: list[tuple[str, ...]]
                    ) -> Callable[[str, bytes], Any]:
    """Compare files whose relative path matches ``pattern`` as JSON minus ``volatile``."""
    regex = re.compile(pattern)

    def normalise(rel: str, data: bytes) -> Any:
        if not regex.fullmatch(rel):
            return None
        obj = json.loads(data)
        for path in volatile:
            _drop(obj, path)
        return json.dumps(obj, sort_keys=True)

    return normalise


# -- operations --------------------------------------------------------------------------
@dataclass
class Operation:
    """A `featstore` command to crash, and how to watch and judge its target.

    ``argv(target)`` gives the command's arguments for a target path (a root or an
    output folder that does not exist yet); ``progress(target)`` counts the events seen
    so far; ``check_after_kill(target, reference)`` asserts that nothing reads as
    complete but wrong and returns what a reader sees (absent/incomplete/complete).
    """

    name: str
    argv: Callable[[Path], list[str]]
    progress: Callable[[Path], int]
    check_after_kill: Callable[[Path, "Reference"], str]
    normalise: Callable[[str, bytes], Any] | None = None
    poll_seconds: float = 0.002

    def command(self, target: Path) -> list[str]:
        return [sys.executable, "-m", "featstore_cli.main", *self.argv(target)]


@dataclass
class Reference:
    """The clean run: its result tree, events and timing."""

    target: Path
    tree: Tree
    events: int               # progress when it finished
    wall_seconds: float       # start to exit
    active_seconds: float     # first event to the last change of the event count
    extra: dict[str, Any] = field(default_factory=dict)  # per-operation (decoded arrays)


@dataclass(frozen=True)
class KillPoint:
    kind: str      # "event": after the k-th event; "time": seconds after the first event
    value: float

    def __str__(self) -> str:
        if self.kind == "event":
            return f"after event {int(self.value)}"
        return f"{self.value:.3f} s after the first event"


@dataclass
class Run:
    """One started process: how it ended and where the kill landed."""

    returncode: int
    killed: bool
    seconds: float
    progress_at_kill: int = -1
    first_event_at: float | None = None   # seconds from the start to the first event
    last_change_at: float | None = None   # ... to the last change of the event count
    stderr: str = ""


def file_events(target: Path) -> int:
    """Progress of a command writing a root: files written so far under ``target``, except
    lease files and temporary ``*.tmp``/``*.partial`` files."""
    n = 0
    for dirpath, dirnames, filenames in os.walk(target):
        if dirpath == str(target):
            dirnames[:] = [d for d in dirnames if d != ".leases"]
        n += sum(1 for f in filenames if not f.endswith((".tmp", ".partial")))
    return n


def run(op: Operation, target: Path, point: KillPoint | None = None,
        timeout: float = 600.0) -> Run:
    """Run ``op`` on ``target``; with ``point``, SIGKILL its process group there."""
    t0 = time.monotonic()
    # stderr to a file, not a pipe: a pipe nobody reads while we poll could fill and stall it
    err_file = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(op.command(target), env={**os.environ, **CHILD_ENV},
                            stdout=subprocess.DEVNULL, stderr=err_file, start_new_session=True)
    result = Run(returncode=0, killed=False, seconds=0.0)
    last = 0
    try:
        while proc.poll() is None:
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"{op.name}: `{' '.join(op.command(target))}` still ran "
                                     f"after {timeout:.0f} s; {listing(target)}")
            events = op.progress(target)
            now = time.monotonic() - t0
            if events and result.first_event_at is None:
                result.first_event_at = now
            if events != last:
                result.last_change_at, last = now, events
            if point is not None and _reached(point, events, now, result.first_event_at):
                os.killpg(proc.pid, signal.SIGKILL)
                result.killed, result.progress_at_kill = True, events
                break
            time.sleep(op.poll_seconds)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        err_file.seek(0)
        result.stderr = err_file.read()
        err_file.close()
    result.returncode = proc.returncode
    result.seconds = time.monotonic() - t0
    if point is not None and not result.killed:
        result.progress_at_kill = op.progress(target)  # finished before the kill point
    return result


def _reached(point: KillPoint, events: int, now: float, first: float | None) -> bool:
    if point.kind == "event":
        return events >= point.value
    return first is not None and now - first >= point.value


def clean_run(op: Operation, target: Path, **extra: Any) -> Reference:
    """Run ``op`` to completion and keep its result as the reference.

    Its *active* time runs from the first event to the last change of the event count:
    time points fall while the command writes, not while it imports or tidies up.
    """
    r = run(op, target)
    assert r.returncode == 0, f"{op.name}: the clean run failed:\n{r.stderr}"
    first = r.first_event_at or 0.0
    active = (r.last_change_at or r.seconds) - first
    return Reference(target, tree(target, op.normalise), op.progress(target), r.seconds,
                     max(active, 1e-3), dict(extra))


def plan(op_name: str, reference: Reference, n: int, seed: int | None = None
         ) -> list[KillPoint]:
    """``n`` kill points, alternately event and time based, from a seeded RNG."""
    if seed is None:
        seed = int(os.environ.get("FEATSTORE_CRASH_SEED", DEFAULT_SEED))
    rng = random.Random(f"{op_name}:{seed}")  # a str seed is stable across processes
    points = []
    for i in range(n):
        if i % 2 == 0:
            points.append(KillPoint("event", rng.randint(1, max(1, reference.events - 1))))
        else:
            points.append(KillPoint("time", rng.uniform(0.05, 0.95) * reference.active_seconds))
    return points


def crash_and_resume(op: Operation, reference: Reference, point: KillPoint, target: Path
                     ) -> dict[str, Any]:
    """Kill ``op`` at ``point``, check what it left, rerun it, compare with the reference.

    Returns what happened (also appended to $FEATSTORE_CRASH_LOG when set, failures
    included); raises AssertionError naming the operation, the kill point, where it
    landed, what was left on disk and what went wrong.
    """
    budget = max(120.0, 20 * reference.wall_seconds)
    killed = run(op, target, point, timeout=budget)
    outcome = {"op": op.name, "point": str(point), "killed": killed.killed,
               "event_at_kill": killed.progress_at_kill, "of_events": reference.events,
               "killed_after_s": round(killed.seconds, 3)}
    try:
        _judge(op, reference, point, target, killed, outcome)
    except AssertionError as err:
        outcome["failure"] = str(err).splitlines()[0]
        raise
    finally:
        if os.environ.get(LOG_ENV):
            with open(os.environ[LOG_ENV], "a") as f:
                f.write(json.dumps(outcome) + "\n")
    return outcome


def _judge(op: Operation, reference: Reference, point: KillPoint, target: Path, killed: Run,
           outcome: dict[str, Any]) -> None:
    where = f"{op.name} killed {point} (landed at event {killed.progress_at_kill})"
    left = listing(target)
    if killed.killed:
        assert killed.returncode == -signal.SIGKILL, f"{where}: exit {killed.returncode}"
    else:
        assert killed.returncode == 0, f"{op.name} failed before {point}:\n{killed.stderr}"
    try:
        state = op.check_after_kill(target, reference)
    except AssertionError as err:
        raise AssertionError(f"{where}: right after the kill: {err}\nLeft on disk: {left}"
                             ) from None
    outcome["state_after_kill"] = state if killed.killed else "finished before the kill"
    rerun = run(op, target, timeout=max(120.0, 20 * reference.wall_seconds))
    outcome["rerun_s"] = round(rerun.seconds, 3)
    assert rerun.returncode == 0, (f"{where}: the rerun failed (exit {rerun.returncode}):\n"
                                   f"{rerun.stderr}\nLeft on disk by the kill: {left}")
    final = tree(target, op.normalise)
    stray = set(final) - set(reference.tree)
    assert final == reference.tree, (
        f"{where}: after the rerun the tree differs from the clean run's: "
        f"{tree_diff(reference.tree, final)}"
        + ("\n(extra = files the killed run left that the rerun never removed)" if stray else "")
        + f"\nLeft on disk by the kill: {left}")
    try:
        after = op.check_after_kill(target, reference)
    except AssertionError as err:
        raise AssertionError(f"{where}: after the rerun: {err}") from None
    assert after == "complete", f"{where}: after the rerun a reader sees it {after}"


# -- roots of feature sets (extract, copy, unpack) ---------------------------------------
#: Fields of a set's group metadata that differ between two runs of one extraction.
EXTRACT_VOLATILE = [("attributes", "featstore", "created_at"),
                    ("attributes", "featstore", "extraction", "seconds"),
                    ("attributes", "featstore", "extraction", "resumed_chunks")]


def reference_sets(reference: Reference) -> list[str]:
    """The feature sets (``KEY.zarr`` / ``KEY.h5``) the clean run left in its root."""
    return sorted(k for k in reference.tree if "/" not in k and k.endswith((".zarr", ".h5")))


def load_arrays(path: Path) -> dict[str, Any]:
    """A set's decoded arrays, as a reader gets them."""
    from featstore.store import open_store

    with open_store(path) as fs:
        return {"features": fs.load_features(), "labels": fs.labels, "valid": fs.valid,
                "sample_ids": fs.sample_ids}


def _listed(target: Path) -> list[dict[str, Any]]:
    """`featstore ls ROOT --json`, in this process."""
    from click.testing import CliRunner

    from featstore_cli.main import cli

    res = CliRunner().invoke(cli, ["ls", str(target), "--json"])
    assert res.exit_code == 0 and "Traceback" not in res.output, \
        f"`featstore ls {target}` failed: {res.output}"
    return json.loads(res.stdout)


def root_state(target: Path, reference: Reference) -> str:
    """What readers of a root see; fails if any set reads as complete but differs.

    A set that `ls` shows as complete, or that `open_store` opens, must hold the clean
    run's files, pass `verify` and decode to the clean run's arrays. Every other set
    (listed as incomplete or damaged, or not listed at all) is incomplete.
    """
    if not target.exists():
        return "absent"
    listed = {Path(row["path"]).name: bool(row.get("complete")) for row in _listed(target)}
    names = set(listed) | {n for n in reference_sets(reference) if (target / n).exists()}
    now = tree(target, reference.extra.get("normalise"))
    states = []
    for name in sorted(names):
        if listed.get(name) or _opens(target / name):
            _assert_same_set(target, name, now, reference, listed.get(name, False))
            states.append("complete")
        else:
            states.append("incomplete")
    if not states:
        return "absent"
    return "complete" if all(s == "complete" for s in states) else "incomplete"


def _opens(path: Path) -> bool:
    """Does `open_store` open ``path`` as a complete set?"""
    from featstore.errors import FeatstoreError
    from featstore.store import open_store

    try:
        open_store(path).close()
    except FeatstoreError:
        return False
    return True


def _assert_same_set(target: Path, name: str, now: Tree, reference: Reference,
                     listed: bool) -> None:
    import numpy as np

    from featstore.store import open_store

    how = "`ls` shows it complete" if listed else "`open_store` opens it"
    want, got = subtree(reference.tree, name), subtree(now, name)
    assert want, f"{name}: {how}, but the clean run made no such set"
    assert got == want, f"{name}: {how}, but its files differ: {tree_diff(want, got)}"
    with open_store(target / name) as fs:
        report = fs.verify()
    assert report.ok, f"{name}: {how}, but verify fails: {report.as_dict()}"
    arrays, ref = load_arrays(target / name), reference.extra["arrays"][name]
    for k in ref:
        same = (arrays[k] is None and ref[k] is None) or np.array_equal(arrays[k], ref[k])
        assert same, f"{name}: {how}, but its {k} differ from the clean run's"


def root_operation(name: str, argv: Callable[[Path], list[str]], *,
                   volatile: list[tuple[str, ...]] | None = None,
                   poll_seconds: float = 0.002) -> Operation:
    """A command writing feature sets into a root (the target)."""
    normalise = json_normaliser(r"[^/]+\.zarr/zarr\.json", volatile) if volatile else None
    return Operation(name, argv, file_events, root_state, normalise, poll_seconds)


def root_reference(op: Operation, target: Path) -> Reference:
    """The clean run of a root operation, with its sets' decoded arrays."""
    ref = clean_run(op, target, normalise=op.normalise)
    ref.extra["arrays"] = {name: load_arrays(target / name) for name in reference_sets(ref)}
    assert ref.extra["arrays"], f"{op.name}: the clean run wrote no feature set"
    return ref


# -- pretrain ------------------------------------------------------------------------------
#: Fields of the model card that differ between two runs of one training.
CARD_VOLATILE = [("created_at",), ("train_seconds",), ("history", "*", "seconds")]


def checkpoint_epoch(path: Path) -> int:
    """The epoch a safetensors checkpoint records, read from its JSON header only."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
        return int(json.loads(header["__metadata__"]["state"])["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def pretrain_operation(argv: Callable[[Path], list[str]], epochs: int) -> Operation:
    """`featstore pretrain` into an output folder (the target).

    Events: each epoch checkpoint, then the weights, then the model card.
    """
    def progress(out: Path) -> int:
        if (out / "model.json").exists():
            return epochs + 2
        if (out / "model.safetensors").exists():
            return epochs + 1
        return checkpoint_epoch(out / "checkpoint.safetensors")

    return Operation("pretrain", argv, progress, pretrain_state,
                     json_normaliser("model.json", CARD_VOLATILE), poll_seconds=0.005)


def pretrain_state(out: Path, reference: Reference) -> str:
    """Finished means a model card; the weights, wherever present, are the clean run's."""
    if not out.exists():
        return "absent"
    now = tree(out, json_normaliser("model.json", CARD_VOLATILE))
    if "model.safetensors" in now:  # only ever written once training has finished
        assert now["model.safetensors"] == reference.tree["model.safetensors"], \
            "model.safetensors differs from the clean run's"
    if "model.json" not in now:
        return "incomplete"
    assert now["model.json"] == reference.tree["model.json"], \
        "the model card differs from the clean run's (beyond its time fields)"
    assert "model.safetensors" in now, "a model card without its weights"
    return "complete"
