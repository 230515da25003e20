"""`--profile`: py-spy samples the worker's pool processes during a phase; the collapsed
stacks are kept, and a summary names the functions the time went to."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil

TOP = 25


@contextlib.contextmanager
def sampled(processes: list[psutil.Process], out_dir: Path | None, phase: str) -> Iterator[None]:
    """py-spy on each process while the block runs (nothing when out_dir is None)."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if out_dir is None or spy is None:
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    spies = [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(process.pid),
                "--format",
                "raw",
                "--rate",
                "250",
                "--nonblocking",
                "--output",
                str(out_dir / f"{phase}-{process.pid}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for process in processes
    ]
    try:
        yield
    finally:
        for process in spies:
            process.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for process in spies:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        summary = summarize(sorted(out_dir.glob(f"{phase}-*.txt")))
        (out_dir / f"{phase}.summary.txt").write_text(summary)


def summarize(files: list[Path]) -> str:
    """Per function: the share of samples where it is on the stack (total) and on top
    (self), over every process's collapsed stacks (py-spy leaves idle threads out)."""
    total: Counter[str] = Counter()
    own: Counter[str] = Counter()
    samples = 0
    for path in files:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [frame.split(" (")[0] + _where(frame) for frame in stack.split(";")]
            samples += count
            for frame in set(frames):
                total[frame] += count
            if frames:
                own[frames[-1]] += count
    if not samples:
        return "no samples\n"
    lines = [f"{samples} busy samples", "", "total%  function (on the stack)"]
    lines += [f"{100 * n / samples:6.1f}  {name}" for name, n in total.most_common(TOP * 2)]
    lines += ["", "self%   function (on top)"]
    lines += [f"{100 * n / samples:6.1f}  {name}" for name, n in own.most_common(TOP)]
    return "\n".join(lines) + "\n"


def _where(frame: str) -> str:
    """' (file.py)' from py-spy's 'function (path/file.py:line)'."""
    if " (" not in frame:
        return ""
    location = frame.split(" (", 1)[1].rstrip(")")
    path = location.rsplit(":", 1)[0]
    parts = Path(path).parts
    return f" ({'/'.join(parts[-2:])})"
