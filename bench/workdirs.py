"""The nnU-Net folders of a benchmark's work directory, shared by the bench scripts (not a test)."""
from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from nnunet_gsd.tools.common import run_command
from nnunet_gsd.utils import write_json_atomic


def run(cmd: List[str], env: Dict[str, str], logfile: Path, what: str = "") -> float:
    """A console command with its output appended to ``logfile`` (the package's one runner); the seconds it took.
    A failure stops the benchmark with the command and the log's tail."""
    start = time.perf_counter()
    run_command(cmd, env, log_file=logfile, what=what, append=True)
    return time.perf_counter() - start


def raw_folder(work: Path, did: int) -> Path:
    """The raw dataset folder ``DatasetNNN_*`` of id ``did`` under ``work/nnUNet_raw``."""
    hits = sorted((work / "nnUNet_raw").glob(f"Dataset{did:03d}_*"))
    if not hits:
        raise RuntimeError(f"Dataset{did:03d} was not converted into {work / 'nnUNet_raw'}")
    return hits[0]


def plans_name(batch: int) -> str:
    """The plans variant every arm of a benchmark trains with: nnU-Net's 2d plans at this batch size."""
    return f"nnUNetPlans_b{batch}"


def write_plans_variant(work: Path, did: int, batch: int) -> None:
    """Write :func:`plans_name` beside the dataset's nnUNetPlans.json (nnU-Net picks the batch size from the patch
    size; benchmarks fix it so that every arm sees the same number of samples)."""
    folder = work / "nnUNet_preprocessed" / raw_folder(work, did).name
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    plans["plans_name"] = plans_name(batch)
    plans["configurations"]["2d"]["batch_size"] = batch
    write_json_atomic(folder / f"{plans_name(batch)}.json", plans)


def log(msg: str) -> None:
    """A timestamped progress line."""
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


def in_background(script: str, argv: List[str], log_file: Path, cwd: Optional[Path] = None) -> int:
    """Start ``script argv`` (without ``--background``) detached, its output appended to ``log_file``; a start that
    ends at once stops with its exit code and the log to read. Returns the PID."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as out:
        proc = subprocess.Popen([sys.executable, script, *[a for a in argv if a != "--background"]], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd)
    time.sleep(5)
    if proc.poll() is not None:
        raise SystemExit(f"the background run ended at once (exit {proc.returncode}); see {log_file}")
    return proc.pid


def add_run_arguments(ap: argparse.ArgumentParser, work: str, results: str) -> None:
    """The options every resumable benchmark takes: device, work folder, results stem, background, report only
    (``work`` and ``results``: the defaults' names, for the help)."""
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--work", type=Path, default=None, help=f"nnU-Net folders and state (default bench/work/{work})")
    ap.add_argument("--results", type=Path, default=None, help=f"results stem (default bench/results/{results})")
    ap.add_argument("--background", action="store_true", help="detach (log in bench/logs/), return at once")
    ap.add_argument("--report-only", action="store_true", help="rewrite the results from the state and exit")


def launch(name: str, script: str, argv: Optional[List[str]]) -> int:
    """``--background``: start ``script`` detached with its log in ``bench/logs/NAME-TIME.log``; says where."""
    log_file = Path(__file__).resolve().parent / "logs" / f"{name}-{dt.datetime.now():%Y%m%d-%H%M%S}.log"
    pid = in_background(script, sys.argv[1:] if argv is None else argv, log_file)
    print(f"running in the background: PID {pid}, log {log_file}")
    return 0


def portable(arg: str) -> str:
    """``arg`` as a results file records it: a path inside a checkout's ``bench/`` from there on (as run from the
    repository root, whichever checkout or worktree ran it), any other absolute path as ``PATH/<its last part>``
    (also inside ``--x=/a/b``), so that no machine's layout reaches a results file."""
    def one(match: re.Match) -> str:
        path = match.group(0)
        if "/bench/" in path:
            return path[path.index("/bench/") + 1:]
        return "PATH/" + path.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"(?<![^\s=:])/[^\s:]+", one, arg)


def command_line(script: str, argv: Iterable[str]) -> str:
    """The command a results file records: ``.venv/bin/python SCRIPT ARGV`` with :func:`portable` arguments,
    without ``--background``."""
    return " ".join([".venv/bin/python", script, *(portable(a) for a in argv if a != "--background")])


def write_markdown(stem: Path, lines: List[str], commands: List[str]) -> None:
    """``STEM.md``: ``lines`` and the commands that made them (the runs that trained, not a ``--report-only``
    rewrite: pass the ones the benchmark's state recorded); logged beside ``STEM.json``."""
    lines = [*lines, *([f"Command: `{commands[0]}`"] if len(commands) == 1 else
                       ["Commands:", "", *(f"- `{c}`" for c in commands)]), ""]
    stem.with_suffix(".md").write_text("\n".join(lines))
    log(f"written {stem.with_suffix('.json')} and .md")


class State:
    """``state.json``, saved atomically after every change. Arms run in threads of one process, and benchmark
    processes may share a work folder: a save merges under a file lock, writing the records this process changed
    and taking every other record from disk, so no process undoes another's results."""

    def __init__(self, path: Path):
        self.path, self.lock = path, threading.Lock()
        self.data = self._read()
        self.changed: dict[str, set] = {"runs": set(), "datasets": set()}

    def _read(self) -> dict:
        data = json.loads(self.path.read_text()) if self.path.is_file() else {}
        data.setdefault("runs", {}).update(data.pop("steps", {}))  # bench/audit.py's states before it shared this
        return {"datasets": {}, **data}

    def save(self) -> None:
        with self.lock, open(self.path.with_suffix(".lock"), "w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            disk = self._read()
            for section, changed in self.changed.items():
                self.data[section].update({k: v for k, v in disk[section].items() if k not in changed})
            theirs = disk.get("commands", [])
            if theirs or self.data.get("commands"):
                self.data["commands"] = theirs + [c for c in self.data.get("commands", []) if c not in theirs]
            write_json_atomic(self.path, self.data, indent=1)

    def run(self, key: str) -> dict:
        """A run's record (read-only: change it with :meth:`set`)."""
        with self.lock:
            return self.data["runs"].get(key, {})

    def set(self, key: str, **values) -> None:
        """Change a run's record and save."""
        with self.lock:
            self.data["runs"].setdefault(key, {}).update(values)
            self.changed["runs"].add(key)
        self.save()

    def add_command(self, command: str) -> None:
        """Record a run's command line (results name every run that trained, in order) and save."""
        with self.lock:
            # a state from before the list holds its last run's command alone
            commands = self.data.setdefault("commands", listed(self.data.pop("command", [])))
            if command in commands:
                return
            commands.append(command)
        self.save()

    @property
    def commands(self) -> List[str]:
        """The command lines of every run that trained here, in order (a state from before the list: its last)."""
        return self.data.get("commands") or listed(self.data.get("command", []))

    def set_dataset(self, did: int, record: dict) -> None:
        with self.lock:
            self.data["datasets"][str(did)] = record
            self.changed["datasets"].add(str(did))
        self.save()


def listed(command) -> List[str]:
    """A state's or results file's command: one string, or (a run in several processes) a list of them."""
    return command if isinstance(command, list) else [command]


def open_state(work: Path, script: str, argv: Optional[List[str]], report_only: bool) -> State:
    """``WORK/state.json`` (the folder made); a run that trains (not ``--report-only``) records its command line."""
    work.mkdir(parents=True, exist_ok=True)
    state = State(work / "state.json")
    if not report_only:
        state.add_command(command_line(script, sys.argv[1:] if argv is None else argv))
    return state
