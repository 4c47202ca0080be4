"""``/optimize`` in chat (SPEC D-2): one study at a time, run as an ``optiflow optimize`` child
process (the bot's event loop stays free), its progress read from the study's progress file, its
result (report.png + the out-of-sample summary) handed to a callback when it ends, and "apply to
paper" saving best.toml as the paper config file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from trading.domain.errors import ConfigError

log = logging.getLogger(__name__)
NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


@dataclass(frozen=True, slots=True)
class StudyOutcome:
    """How a study ended: ``ok``, its name, the output folder, the report PNG (None on failure)
    and a text summary (the out-of-sample lines, or the error line)."""

    ok: bool
    name: str
    out_dir: Path
    png: bytes | None
    summary: str


class OptimizeJobs:
    """Starts and watches ``optiflow optimize`` studies for the chat, one at a time.

    Args:
        study_dir: where study files are looked up by name (``/optimize NAME`` → NAME.toml).
        output_dir: OPTIFLOW_OUTPUT_DIR; a study writes to ``<output_dir>/optimize/<name>``.
        paper_config: the file "apply to paper" writes (the paper run's --config / OPTIFLOW_CONFIG).
        data_dir: the data folder the study backtests on.
    """

    def __init__(self, study_dir: Path, output_dir: Path, paper_config: Path, data_dir: Path) -> None:
        self.study_dir = study_dir
        self.output_dir = output_dir
        self.paper_config = paper_config
        self.data_dir = data_dir
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task | None = None
        self.current: str | None = None

    def resolve(self, name: str) -> Path:
        """The study file for ``name`` in the study folder.

        Raises:
            ConfigError: a path (not a bare name), or no such file (names the ones there are).
        """
        name = name.strip()
        if not name or set(name) - NAME_OK or name.startswith("."):
            raise ConfigError("give the name of a study file, e.g. /optimize optimize")
        for candidate in (self.study_dir / name, self.study_dir / f"{name}.toml"):
            if candidate.is_file():
                return candidate
        known = sorted(p.stem for p in self.study_dir.glob("*.toml") if _is_study(p))
        raise ConfigError(f"no study file {name!r} in {self.study_dir} (there are: {', '.join(known) or 'none'})")

    def study_name(self, path: Path) -> str:
        """The ``[study] name`` of a study file (it names the output folder).

        Raises:
            ConfigError: the file is not a valid study file (one line).
        """
        from trading.app.optimize import load_search_space

        return load_search_space(path).study.name

    def out_dir(self, name: str) -> Path:
        """The output folder of study ``name``."""
        return self.output_dir / "optimize" / name

    @property
    def running(self) -> bool:
        """A study process is running."""
        return self._task is not None and not self._task.done()

    async def start(self, path: Path, on_done: Callable[[StudyOutcome], Awaitable[None]]) -> str:
        """Start the study of ``path`` in a child process; ``on_done(outcome)`` runs when it ends.

        Raises:
            ConfigError: a study is already running, or the file is not a valid study.
        """
        if self.running:
            raise ConfigError(f"study {self.current!r} is still running: /optimize status")
        name = self.study_name(path)
        out = self.out_dir(name)
        out.mkdir(parents=True, exist_ok=True)
        (out / "progress.json").unlink(missing_ok=True)
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "optimize", str(path), "--out", str(out),
            "--data-dir", str(self.data_dir),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        self.current = name
        self._task = asyncio.create_task(self._watch(self._process, name, out, on_done))
        return name

    async def _watch(self, process, name: str, out: Path, on_done) -> None:
        stdout, stderr = await process.communicate()
        if process.returncode == 0 and (out / "report.png").exists():
            report = (out / "report.txt").read_text(encoding="utf-8")
            outcome = StudyOutcome(True, name, out, (out / "report.png").read_bytes(), summary_lines(report))
        else:
            lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
            problem = next((line for line in reversed(lines) if line.startswith("optiflow:")), None)
            outcome = StudyOutcome(False, name, out, None, problem or f"exit code {process.returncode}")
            log.warning("study %s failed: %s", name, outcome.summary)
        try:
            await on_done(outcome)
        except Exception:  # the chat could not be told; the files are there
            log.exception("could not report the end of study %s", name)

    def status(self) -> str:
        """One line on the running (or last) study's progress."""
        if self.current is None:
            return "No study has run yet. Start one with /optimize NAME."
        progress_file = self.out_dir(self.current) / "progress.json"
        state = "running" if self.running else "finished"
        if not progress_file.exists():
            return f"Study {self.current}: {state}, first trials under way."
        p = json.loads(progress_file.read_text(encoding="utf-8"))
        best = "" if p.get("best") is None else f", best in-sample {p['objective']} {p['best']:.3f}"
        return (f"Study {self.current}: {state} — fold {p['fold']}/{p['folds']}, {p['done']}/{p['trials']} "
                f"trials{best}, {p['elapsed_s']:.0f} s")

    def apply_to_paper(self, name: str) -> Path:
        """Save study ``name``'s best.toml as the paper config file (the previous one kept as
        ``.bak``); it takes effect at the next paper start. Returns the file written.

        Raises:
            ConfigError: the study has no best.toml (not finished).
        """
        best = self.out_dir(name) / "best.toml"
        if set(name) - NAME_OK or not best.is_file():
            raise ConfigError(f"study {name!r} has no best config (not finished?)")
        from trading.domain.config import load_trading_config

        load_trading_config(best)  # refuse a file that would not load at the next start
        self.paper_config.parent.mkdir(parents=True, exist_ok=True)
        if self.paper_config.exists():
            shutil.copyfile(self.paper_config, self.paper_config.with_name(self.paper_config.name + ".bak"))
        shutil.copyfile(best, self.paper_config)
        return self.paper_config

    async def close(self) -> None:
        """Stop a running study (its storage keeps what it did; /optimize again resumes it)."""
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _is_study(path: Path) -> bool:
    try:
        return "[study]" in path.read_text(encoding="utf-8")
    except OSError:
        return False


def summary_lines(report: str) -> str:
    """The report's header and out-of-sample lines (the chat caption)."""
    lines = report.splitlines()
    keep = lines[:2]
    if "OUT-OF-SAMPLE (windows the search never saw; what to expect):" in lines:
        i = lines.index("OUT-OF-SAMPLE (windows the search never saw; what to expect):")
        keep += lines[i:i + 3]
    return "\n".join(keep)
