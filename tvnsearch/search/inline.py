"""An executor in the driver's own process that behaves as Ray's does, for tests and benchmarks.

It evaluates each candidate when it is submitted. By default it hands the results back at once, in
the order submitted. With a ``seed`` it hands them back as workers of different speeds would: a
random share of those done at each ``wait``, in a random order. With ``loss_rate``, each attempt at
a task loses its worker with that probability, and a task is tried ``1 + max_retries`` times before
its candidate is recorded as failed, as ``tvnsearch.search.executors.RayExecutor`` records it.
So the engine's ordering, retries and patience with a slow gate are tested without Ray.
"""

from __future__ import annotations

import random
from typing import Any

from tvnsearch.search.worker import Evaluation, Evaluator, Job, lost


class WorkerLostError(RuntimeError):
    """A simulated worker process that died during a task."""


class InlineExecutor:
    def __init__(
        self,
        evaluator: Evaluator,
        task: Any = None,
        *,
        seed: int | None = None,
        loss_rate: float = 0.0,
        max_retries: int = 1,
    ) -> None:
        if not 0.0 <= loss_rate < 1.0:
            raise ValueError(f"loss_rate must be in [0, 1), but got {loss_rate=}")
        self.evaluator, self.task = evaluator, task
        self.loss_rate, self.max_retries = loss_rate, max_retries
        self._rng = random.Random(0 if seed is None else seed)
        self._shuffle = seed is not None
        self._done: list[tuple[int, Evaluation]] = []
        self.num_attempts = 0  # every attempt at a task, lost ones included

    @property
    def num_running(self) -> int:
        return len(self._done)

    def submit(self, key: int, job: Job) -> None:
        self._done.append((key, self._attempt(job)))

    def wait(self, timeout: float) -> list[tuple[int, Evaluation]]:
        if not self._shuffle or not self._done:
            done, self._done = self._done, []
            return done
        finished = self._rng.sample(self._done, self._rng.randint(1, len(self._done)))
        keys = {key for key, _ in finished}
        self._done = [(key, e) for key, e in self._done if key not in keys]
        return finished

    def _attempt(self, job: Job) -> Evaluation:
        for _ in range(1 + self.max_retries):
            self.num_attempts += 1
            if self._rng.random() >= self.loss_rate:
                return self.evaluator(job, self.task)
        return lost(1 + self.max_retries, WorkerLostError("the worker process died"))
