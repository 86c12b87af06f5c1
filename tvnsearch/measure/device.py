"""What a runtime was measured on: runtimes mean something only next to this signature."""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tvnsearch.errors import InputError, Problem

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class DeviceSignature:
    """The CPU model or GPU name, the intra-op thread count, the torch build, the runtime that
    ran the network (``tvnsearch.measure.runtimes``) and its version, and the machine (a Ray
    node's host and id, where a profiler was placed on one)."""

    kind: str  # "cpu" or "cuda"
    name: str
    threads: int
    torch_version: str
    runtime: str = "eager"
    runtime_version: str = ""  # eager: torch_version
    node: str = ""

    @property
    def hardware_key(self) -> str:
        """The device alone: what its roofline is kept by."""
        return f"{self.kind}|{self.name}|threads={self.threads}|torch={self.torch_version}"

    @property
    def key(self) -> str:
        """What a profile may be reused on: the device and the runtime (any machine of the same
        model: a resumed search on a new cluster measures nothing again)."""
        if self.runtime == "eager":  # the key of profiles from before runtimes were chosen
            return self.hardware_key
        return f"{self.hardware_key}|{self.runtime}={self.runtime_version}"

    @property
    def label(self) -> str:
        """The key and the machine: what the lineage records next to each runtime."""
        return f"{self.key}|node={self.node}" if self.node else self.key

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def runtime_of(label: str) -> str:
    """The runtime and version a signature's key or label names, for people ("PyTorch eager"
    where it names none: eager, or a profile from before runtimes were chosen)."""
    from tvnsearch.measure.runtimes import RUNTIMES

    for part in label.split("|")[4:]:
        name, _, version = part.partition("=")
        if name in RUNTIMES and name != "eager":
            return f"{name} {version}"
    return "PyTorch eager"


def device_signature(
    kind: str, threads: int, runtime: str = "eager", node: str = ""
) -> DeviceSignature:
    import torch  # here, not at the top: records and gate decisions need no torch

    from tvnsearch.measure.runtimes import RUNTIMES

    name = torch.cuda.get_device_name() if kind == "cuda" else cpu_model()
    version = "" if runtime == "eager" else RUNTIMES[runtime].version()
    return DeviceSignature(kind, name, threads, torch.__version__, runtime, version, node)


@cache
def cpu_model() -> str:
    """The ``model name`` of /proc/cpuinfo on Linux; what ``platform`` knows elsewhere."""
    with_cpuinfo = Path("/proc/cpuinfo")
    if with_cpuinfo.exists():
        for line in with_cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown cpu"


def check_device(name: str, *, source: str, field: str = "device", threads: int = 1) -> None:
    """Raise an ``InputError`` naming ``source`` and ``field`` when this machine cannot run on
    ``name`` ("cpu", "cuda" or "cuda:N"), or ``threads`` is not a thread count."""
    problems = []
    kind, _, index = name.partition(":")
    if kind not in DEVICES or (index and not (kind == "cuda" and index.isdigit())):
        problems.append(Problem(field, f"must be cpu, cuda or cuda:N, but got {name!r}"))
    elif kind == "cuda" and int(index or 0) >= (count := _cuda_count()):
        have = f"this machine has {count} CUDA GPU(s)" if count else "no CUDA GPU is available"
        problems.append(Problem(field, f"{name} was asked for, but {have}"))
    if threads < 1:
        problems.append(Problem("threads", f"must be >= 1, but got {threads!r}"))
    if problems:
        raise InputError(source, problems)


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
