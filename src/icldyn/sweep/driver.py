"""The one loop every backend shares: skip complete members, submit the rest to the engine, retry a
failed one (bounded, with an exponential back-off), and keep going; a summary at the end.

A backend only maps "train this member" onto an engine (a process pool, Ray tasks, a Slurm array):
`submit(items)` with items [(member, attempt)], `poll(timeout)` -> [(member, attempt, result, error)]
for what finished, `progress_events()` -> [(label, step, total, loss)], `close()`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from icldyn.errors import DivergedError, UsageError
from icldyn.store import RunDir
from icldyn.sweep.member import unpack
from icldyn.sweep.spec import Member, SweepPlan

# errors a second try would repeat: reported at once, never retried
DETERMINISTIC = (UsageError, DivergedError)


@dataclass
class Summary:
    """What a sweep did: member names done / skipped / failed (with the reason), tries, resumes."""

    path: object
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    resumed_from: dict[str, int] = field(default_factory=dict)
    results: dict[str, dict] = field(default_factory=dict)  # what each member's engine said (node, storage)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def execute(plan: SweepPlan, backend, *, progress: Callable | None = None, status: Callable | None = None,
            max_inflight: int | None = None, sleep: Callable[[float], None] = time.sleep) -> Summary:
    """Train every incomplete member of `plan` through `backend`; return the summary.

    `progress(label, step, total, loss)` as in `icldyn run`; `status(member_name, state)` with state
    one of skipped, pending, running, retrying, done, failed.
    """
    started = time.perf_counter()
    summary = Summary(plan.path)
    note = status or (lambda name, state: None)
    ready: list[tuple[Member, int, float]] = []
    for m in plan.members:
        if RunDir(m.path).is_complete:
            summary.skipped.append(m.name)
            note(m.name, "skipped")
        else:
            ready.append((m, 0, 0.0))
            note(m.name, "pending")
    inflight = 0
    try:
        while ready or inflight:
            now = time.monotonic()
            due = [r for r in ready if r[2] <= now]
            if max_inflight is not None:
                due = due[:max(0, max_inflight - inflight)]
            if due:
                ready = [r for r in ready if r not in due]
                backend.submit([(m, attempt) for m, attempt, _ in due])
                inflight += len(due)
                for m, attempt, _ in due:
                    note(m.name, "running")
            for member, attempt, result, error in backend.poll(0.1):
                inflight -= 1
                summary.attempts[member.name] = attempt + 1
                if error is None:
                    _finish(member, result, summary)
                    note(member.name, "done")
                elif attempt < plan.spec.retries and not isinstance(_cause(error), DETERMINISTIC):
                    ready.append((member, attempt + 1, time.monotonic() + plan.spec.backoff * 2 ** attempt))
                    note(member.name, "retrying")
                else:
                    summary.failed[member.name] = _reason(error)
                    note(member.name, "failed")
            for event in backend.progress_events():
                if progress is not None:
                    progress(*event)
            if not inflight and ready:
                sleep(min(0.1, max(0.0, min(r[2] for r in ready) - time.monotonic())))
    finally:
        backend.close()
    summary.wall_s = time.perf_counter() - started
    return summary


def _finish(member: Member, result: dict | None, summary: Summary) -> None:
    result = result or {}
    if result.get("files") is not None:  # trained where the output folder is not visible
        unpack(result["files"], member.path)
    if result.get("resumed_from") is not None:
        summary.resumed_from[member.name] = result["resumed_from"]
    summary.results[member.name] = {k: v for k, v in result.items() if k != "files"}
    summary.done.append(member.name)


def _cause(error: BaseException) -> BaseException:
    """The member's own error under an engine's wrapper (Ray's RayTaskError keeps it as .cause)."""
    return getattr(error, "cause", None) or error


def _reason(error: BaseException) -> str:
    cause = _cause(error)
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}".rstrip(": ")
