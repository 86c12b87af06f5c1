"""What became of a candidate: one vocabulary for every step that decides it.

The gate admits, rejects or fails a candidate, and so does each measurement it takes (a
``Profile``); training ends a candidate trained or failed; a genome seen before is a duplicate.
The lineage records one of the ``FINAL`` statuses per candidate, and every count, reader and
summary of a run derives its columns from ``FINAL``.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    ADMITTED = "admitted"  # within every budget so far: to be trained (never final)
    TRAINED = "trained"  # trained and scored: has a fitness
    REJECTED = "rejected"  # broke a constraint before training (counted, predicted or measured)
    FAILED = "failed"  # crashed, diverged, ran out of memory training, or its worker was lost
    DUPLICATE = "duplicate"  # a genome evaluated before: its result reused, not run again


FINAL = (Status.TRAINED, Status.REJECTED, Status.FAILED, Status.DUPLICATE)
