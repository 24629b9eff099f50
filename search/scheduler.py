"""The scheduler: turns what the search needs into jobs, and finished jobs into events.

It owns the work in flight, which the state does not know about: candidates
between their proposal and their record (with the stages they have passed),
jobs waiting for a worker, jobs running. A free worker always gets the
cheapest work waiting (JobKind order: fingerprint, cheap tier, full suite,
transfer, held-out); a new candidate is proposed only when nothing waits, and
only while the budget has room for it (candidates in progress count). So the
workers stay busy without generations, screening goes on beside a long full
suite, and a search never trains more candidates than it was given.

complete() returns events without sequence numbers; the driver numbers them,
records them and applies them to the state.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from typing import Any

from primitives.analysis import complexity, state_buffers, state_bytes
from primitives.program import Program
from primitives.serialize import to_dict
from search import funnel as funnel_module
from search.events import CacheHit, CandidateEvaluated, Event, HeldOutScored, TransferScored
from search.funnel import Funnel
from search.proposer import Proposal, Proposer
from search.records import Completion, Job, JobKind, Stage, Status
from search.state import SearchState


@dataclasses.dataclass
class InProgress:
    """A proposed candidate on its way through the funnel."""

    proposal: Proposal
    fingerprint: str = ""
    tasks: dict[str, dict] = dataclasses.field(default_factory=dict)
    diverged: list[str] = dataclasses.field(default_factory=list)
    cheap_score: float | None = None  # its cheap rung's score, once trained there
    seconds: float = 0.0  # worker time over its stages
    started: float | None = None  # wall clock when its first stage started
    worker: int = 0


@dataclasses.dataclass(frozen=True)
class Work:
    """A job to give a worker: what to do, to which candidate (or member), with which program."""

    kind: JobKind
    id: int  # the candidate (or hall-of-fame member) it is for
    program: Program
    extra: tuple[tuple[str, Any], ...] = ()  # more of the job's payload (base rates, inherited rate offsets)


class Scheduler:
    def __init__(self, state: SearchState, proposer: Proposer, funnel: Funnel):
        self.state = state
        self.proposer = proposer
        self.funnel = funnel
        self.candidates: dict[int, InProgress] = {}
        self.waiting: list[tuple[int, int, Work]] = []  # heap: (priority, order, work)
        self.running: dict[int, Work] = {}  # job id -> work
        self.next_id = state.next_id
        self.proposing = True
        self._order = itertools.count()
        self._job_ids = itertools.count()

    # ------------------------------------------------------------------ what there is to do

    def queue(self, work: Work) -> None:
        heapq.heappush(self.waiting, (work.kind.priority, next(self._order), work))

    def queue_held_out(self, ids: list[int]) -> None:
        members = {m.id: m for m in self.state.hall_of_fame.members}
        for id_ in ids:
            if id_ in members:
                self.queue(Work(JobKind.HELD_OUT, id_, members[id_].program))

    def queue_transfers(self) -> None:
        """Every candidate the state says is due for the transfer stage and that is not queued yet."""
        queued = {w.id for w in self._all_work() if w.kind is JobKind.TRANSFER}
        for id_, (individual, base_lrs) in self.state.transfer_due.items():
            if id_ not in queued:
                self.queue(Work(JobKind.TRANSFER, id_, individual.program, (("base_lrs", base_lrs),)))

    def _all_work(self):
        return [w for _, _, w in self.waiting] + list(self.running.values())

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.running

    @property
    def candidates_in_progress(self) -> int:
        return len(self.candidates)

    def budget_left(self) -> bool:
        return self.state.counters.evaluated + len(self.candidates) < self.state.config.stop.max_evals

    def _taken(self, digest: str) -> bool:
        return digest in self.state.structures or any(
            c.proposal.structural_hash == digest for c in self.candidates.values())

    # ------------------------------------------------------------------ handing out jobs

    def next_job(self) -> Job | None:
        """The cheapest work waiting, else a new candidate's fingerprint, else None."""
        if self.waiting:
            work = heapq.heappop(self.waiting)[2]
        elif self.proposing and self.budget_left():
            warm = {c.proposal.warm_start for c in self.candidates.values() if c.proposal.warm_start}
            self.next_id = max(self.next_id, self.state.next_id)
            proposal = self.proposer.propose(self.state, self.next_id, self._taken, warm)
            if proposal is None:
                return None
            self.next_id += 1
            self.candidates[proposal.id] = InProgress(proposal)
            work = Work(JobKind.FINGERPRINT, proposal.id, proposal.program)
        else:
            return None
        job = Job(next(self._job_ids), work.kind, {"program": to_dict(work.program), **dict(work.extra)})
        self.running[job.id] = work
        return job

    # ------------------------------------------------------------------ taking results

    def complete(self, completion: Completion) -> list[Event]:
        work = self.running.pop(completion.job.id)
        if work.kind is JobKind.HELD_OUT:
            return [HeldOutScored(seq=0, id=work.id, **_scored(completion))]
        if work.kind is JobKind.TRANSFER:
            drift = completion.result.get("drift") if completion.status is Status.OK else None
            return [TransferScored(seq=0, id=work.id, drift=drift, **_scored(completion))]
        candidate = self.candidates[work.id]
        if completion.status is not Status.OK:
            stage = Stage.FINGERPRINT if work.kind is JobKind.FINGERPRINT else Stage.FAILED
            return [self._record(candidate, stage, completion.status, {}, completion.reason, completion)]
        if work.kind is JobKind.FINGERPRINT:
            return self._fingerprinted(candidate, completion.result)
        candidate.tasks.update(completion.result["tasks"])
        candidate.diverged += completion.result.get("diverged", [])
        if work.kind is JobKind.CHEAP:
            candidate.cheap_score = funnel_module.score(completion.result["tasks"])
        after = self.funnel.after(work.kind, candidate.tasks, self.state.rung_window,
                                  warm_start=bool(candidate.proposal.warm_start))
        if after is not None:
            self._account(candidate, completion)
            self.queue(Work(after, work.id, work.program, work.extra))
            return []
        status = Status.DIVERGED if candidate.diverged else Status.OK
        reason = f"diverged at every learning rate on {', '.join(candidate.diverged)}" if candidate.diverged else ""
        return [self._record(candidate, self.funnel.stage(work.kind), status, candidate.tasks, reason, completion)]

    def _fingerprinted(self, candidate: InProgress, fingerprint: str) -> list[Event]:
        known = self.state.behaviours.get(fingerprint)
        if known is None:
            candidate.fingerprint = fingerprint
            # A child's tuning brackets its parent's rate on each task (proxy_tasks/tuning.py).
            offsets = self.state.parent_offsets(candidate.proposal.parent)
            extra = (("offsets", offsets),) if offsets else ()
            self.queue(Work(self.funnel.first(), candidate.proposal.id, candidate.proposal.program, extra))
            return []
        # Known behaviour: the first evaluation's score stands, nothing is trained.
        del self.candidates[candidate.proposal.id]
        return [CacheHit(seq=0, fingerprint=fingerprint, same_as=known.id, stage=known.stage, score=known.score,
                         **_proposed(candidate.proposal))]

    def _account(self, candidate: InProgress, completion: Completion) -> None:
        candidate.seconds += completion.seconds
        candidate.worker = completion.worker
        if candidate.started is None and completion.started:
            candidate.started = completion.started

    def _record(self, candidate: InProgress, stage: Stage, status: Status, tasks: dict[str, dict], reason: str,
                completion: Completion) -> CandidateEvaluated:
        self._account(candidate, completion)
        del self.candidates[candidate.proposal.id]
        program = candidate.proposal.program
        return CandidateEvaluated(
            seq=0, stage=stage, status=status, score=funnel_module.score(tasks) if not status.failed else funnel_module.WORST,
            tasks=tasks, reason=reason, complexity=complexity(program, self.state.primitive_set),
            state_buffers=state_buffers(program), state_bytes=state_bytes(program),
            cheap_score=candidate.cheap_score, worker=candidate.worker,
            seconds=candidate.seconds,
            started=candidate.started or None, finished=completion.finished or None,
            fingerprint=candidate.fingerprint, **_proposed(candidate.proposal))

    def abandon(self) -> list[int]:
        """Forget everything in flight (a wall-time or target stop); the job ids that were running."""
        running = list(self.running)
        self.waiting, self.running, self.candidates = [], {}, {}
        self.proposing = False
        return running


def _proposed(proposal: Proposal) -> dict[str, Any]:
    return {"id": proposal.id, "program": to_dict(proposal.program), "structural_hash": proposal.structural_hash,
            "parent": proposal.parent, "mutation": proposal.mutation, "warm_start": proposal.warm_start,
            "attempts": proposal.attempts, "invalid": proposal.invalid, "duplicates": proposal.duplicates}


def _scored(completion: Completion) -> dict[str, Any]:
    """Score, status, tasks and reason of a held-out or transfer job (a failure scores WORST)."""
    if completion.status is not Status.OK:
        return {"score": funnel_module.WORST, "status": completion.status, "tasks": {}, "reason": completion.reason}
    tasks = completion.result["tasks"]
    diverged = completion.result.get("diverged", [])
    return {"score": funnel_module.score(tasks), "status": Status.DIVERGED if diverged else Status.OK,
            "tasks": tasks, "reason": ", ".join(diverged)}
