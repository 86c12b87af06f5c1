"""Running the stages of a streaming network at the same time: CPU threads or CUDA streams.

Within a frame the stages of a ``StreamingTVN`` share nothing (each reads the previous state and
returns its own slots), so any worker may run any stage. ``ThreadedPipeline`` keeps a persistent
pool: the calling thread is worker 0, and one barrier per frame both ends a frame and starts the
next (its action, run while every worker waits, assembles the state). PyTorch releases the GIL
inside its ops, and a TorchScript-compiled model (``torch.jit.script(model)``) inside a whole
stage, so the workers really compute at once; each computes on one intra-op thread, since
``torch.set_num_threads`` is global and many threads per tiny op only contend.

``StreamPipeline`` gives every stage its own CUDA stream: the streams fork from the caller's
stream at the start of a frame and join it at the end, so a stage reads what the others wrote on
their previous frame only, and no tensor is freed while another stream may still read it.

Every runner has ``step(frame, state) -> (logits, state)`` and ``run(frames, state) -> (list of
logits, state)``; all give the same outputs as ``StreamingTVN.step``.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

Assignment = tuple[tuple[int, ...], ...]  # the stages of each worker
State = list[Tensor]  # as ``StreamingTVN.initial_state`` makes it
_MAX_EXACT = 1 << 16  # assignments to try one by one before falling back to a greedy packing


def assign_stages(stage_costs: Sequence[float], num_workers: int) -> Assignment:
    """Stages per worker so that the busiest worker has the least to do (a stage is never split).

    Exact when ``num_workers ** num_stages`` is small, else longest-first greedy packing.
    """
    num_workers = max(1, min(num_workers, len(stage_costs)))
    if num_workers ** len(stage_costs) <= _MAX_EXACT:
        owners = min(
            itertools.product(range(num_workers), repeat=len(stage_costs)),
            key=lambda o: _busiest(o, stage_costs, num_workers),
        )
    else:
        owners = _greedy(stage_costs, num_workers)
    return tuple(
        tuple(s for s, w in enumerate(owners) if w == worker) for worker in range(num_workers)
    )


def worker_loads(stage_costs: Sequence[float], assignment: Assignment) -> tuple[float, ...]:
    return tuple(sum(stage_costs[s] for s in stages) for stages in assignment)


def _busiest(owners: Sequence[int], costs: Sequence[float], num_workers: int) -> float:
    loads = [0.0] * num_workers
    for stage, worker in enumerate(owners):
        loads[worker] += costs[stage]
    return max(loads)


def _greedy(costs: Sequence[float], num_workers: int) -> list[int]:
    loads, owners = [0.0] * num_workers, [0] * len(costs)
    for stage in sorted(range(len(costs)), key=lambda s: -costs[s]):
        worker = loads.index(min(loads))
        owners[stage] = worker
        loads[worker] += costs[stage]
    return owners


class ThreadedPipeline:
    """Stages on a persistent pool of threads, one per entry of ``assignment``; a context
    manager (``close`` ends the threads and restores the intra-op thread count)."""

    def __init__(self, model: Any, assignment: Assignment) -> None:
        self._model, self._assignment = model, assignment
        self._barrier = threading.Barrier(len(assignment), action=self._advance)
        self._frames: Iterator[Tensor] = iter(())
        self._frame: Tensor | None = None
        self._state: State = []
        self._parts: list[list[Tensor]] = []
        self._outputs: list[Tensor] = []
        self._error: BaseException | None = None
        self._closing = False  # set by ``close``, seen by the workers through the next action
        self._exiting = False
        self._previous_threads = torch.get_num_threads()
        torch.set_num_threads(1)  # process-wide: every worker computes on its own thread
        self._workers = [
            threading.Thread(target=self._work, args=(w,), daemon=True, name=f"stage-worker-{w}")
            for w in range(1, len(assignment))
        ]
        for worker in self._workers:
            worker.start()

    def run(self, frames: Iterable[Tensor], state: State) -> tuple[list[Tensor], State]:
        self._frames, self._state, self._outputs, self._error = iter(frames), state, [], None
        self._barrier.wait()  # its action starts the first frame
        while self._frame is not None:
            self._run_own(0)
            self._barrier.wait()  # its action ends this frame and starts the next
        if self._error is not None:
            raise self._error
        return self._outputs, self._state

    def step(self, frame: Tensor, state: State) -> tuple[Tensor, State]:
        outputs, state = self.run([frame], state)
        return outputs[0], state

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._barrier.wait()
        for worker in self._workers:
            worker.join()
        torch.set_num_threads(self._previous_threads)

    def __enter__(self) -> ThreadedPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _work(self, worker: int) -> None:
        while True:
            self._barrier.wait()
            if self._exiting:
                return
            if self._frame is not None:
                self._run_own(worker)

    def _run_own(self, worker: int) -> None:
        try:
            with torch.inference_mode():  # grad mode is per thread: set it in every worker
                for stage in self._assignment[worker]:
                    self._parts[stage] = self._model.run_stage(stage, self._frame, self._state)
        except BaseException as exc:  # re-raised by ``run`` in the calling thread
            self._error = exc

    def _advance(self) -> None:
        self._exiting = self._closing
        try:
            if self._frame is not None and self._error is None:
                logits, self._state = self._model.assemble(self._state, self._parts)
                self._outputs.append(logits)
            self._frame = None if self._error or self._closing else next(self._frames, None)
        except BaseException as exc:
            self._error, self._frame = exc, None
        self._parts = [[] for _ in range(self._model.num_stages)]


class StreamPipeline:
    """Every stage on its own CUDA stream, launched from the calling thread."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self._streams = [torch.cuda.Stream() for _ in range(model.num_stages)]

    @torch.inference_mode()
    def step(self, frame: Tensor, state: State) -> tuple[Tensor, State]:
        caller = torch.cuda.current_stream()
        parts = []
        for stage, stream in enumerate(self._streams):
            stream.wait_stream(caller)
            with torch.cuda.stream(stream):
                parts.append(self._model.run_stage(stage, frame, state))
        for stream in self._streams:
            caller.wait_stream(stream)
        return self._model.assemble(state, parts)

    def run(self, frames: Iterable[Tensor], state: State) -> tuple[list[Tensor], State]:
        outputs = []
        for frame in frames:
            logits, state = self.step(frame, state)
            outputs.append(logits)
        return outputs, state


class OneAfterAnother:
    """The stages in order on the calling thread (``StreamingTVN.step``), as a runner."""

    def __init__(self, model: Any) -> None:
        self._model = model

    @torch.inference_mode()
    def step(self, frame: Tensor, state: State) -> tuple[Tensor, State]:
        return self._model.step(frame, state)

    @torch.inference_mode()
    def run(self, frames: Iterable[Tensor], state: State) -> tuple[list[Tensor], State]:
        outputs = []
        for frame in frames:
            logits, state = self._model.step(frame, state)
            outputs.append(logits)
        return outputs, state
