"""The runtimes a network is timed in, and exported for: the file each one runs, written by one
function that the profiler and ``tvnsearch export`` share, so that the latency a search measured
is the latency of the file it exports.

- ``eager``: the PyTorch module itself (the exported file is its weights).
- ``torchscript``: a trace, frozen (weights constant), saved as ``model.ts``; ``torch.jit.load``
  runs it.
- ``onnxruntime``: ``torch.export`` then the ONNX exporter (its graph optimiser on), saved as
  ``model.onnx``; ONNX Runtime runs it on the CPU, or with the CUDA execution provider.
- ``executorch``: ``torch.export`` lowered to XNNPACK, saved as ``model.pte``; the ExecuTorch
  runtime runs it (CPU only; one clip at a time; where the optional ``executorch`` package is
  installed: ``pip install 'tvnsearch[executorch]'``).

Every file is written from the network prepared for inference: batch norms folded into the
convolutions before them (``tvnsearch.models.inference``). Each takes a float32 clip
``(B, 3, T, H, W)``, normalised, with any batch size (ExecuTorch's: one clip). Before it is timed
or kept, a file's output is checked against the PyTorch module's on a clip of another batch size
than the one it was written with (``check_agrees``: a relative error, not an absolute difference
that near-zero logits would make meaningless).
"""

from __future__ import annotations

import importlib.metadata
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor, nn

Forward = Callable[["Tensor"], "Tensor"]

EXAMPLE_BATCH = 2  # a file is written from a clip of this batch (torch.export fixes a batch of 1)
CHECK_BATCH = 3  # and checked on another: shows that the batch dimension was left free
# The largest relative error (max |got - want| / max |want|) a file may show against the PyTorch
# module: float32 kernels that sum in another order (folded batch norm, fused ops) agree to
# about 1e-6 on the CPU; a GPU's kernels differ more between algorithms.
TOLERANCE = {"cpu": 1e-3, "cuda": 1e-2}


class Mismatch(ValueError):
    """A runtime's output is not the PyTorch module's."""


@dataclass(frozen=True)
class Runtime:
    name: str
    devices: tuple[str, ...]
    file_name: str | None  # what export writes; None: the weights themselves
    package: str  # the distribution whose version the device signature records
    writer: Callable[[nn.Module, Tensor, Path], None] | None
    loader: Callable[[Path, str, int], Forward] | None
    batch: int | None = None  # the one batch size the file takes; None: any

    @property
    def check_batch(self) -> int:
        """The batch a file is checked on: another than it was written with, where it can."""
        return self.batch or CHECK_BATCH

    def version(self) -> str:
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return ""

    def missing(self, device: str) -> str | None:
        """Why this runtime cannot run on ``device`` ("cpu" or "cuda") here; None when it can."""
        kind = device.partition(":")[0]
        if kind not in self.devices:
            return f"{self.name} runs on {' or '.join(self.devices)} only, not {kind}"
        if not self.version():
            return f"{self.name} needs the {self.package} package, which is not installed here"
        if self.name == "onnxruntime" and kind == "cuda":
            return _missing_cuda_provider()
        return None

    def write(self, model: nn.Module, clip_shape: tuple[int, ...], path: Path) -> None:
        """Write ``model`` as this runtime's file at ``path``, for inference (eval mode, batch
        norms folded: ``tvnsearch.models.inference``), from a seeded example of
        ``EXAMPLE_BATCH`` clips of ``clip_shape`` (C, T, H, W)."""
        assert self.writer is not None, f"{self.name} runs the module itself"
        from tvnsearch.models.inference import inference_copy

        example = example_clip(clip_shape, self.batch or EXAMPLE_BATCH, seed=0, like=model)
        self.writer(inference_copy(model), example, path)

    def load(self, path: Path, device: str, threads: int) -> Forward:
        """The file at ``path`` as a function of a clip, on ``device`` with ``threads``."""
        assert self.loader is not None, f"{self.name} runs the module itself"
        return self.loader(path, device, threads)


def prepare(
    runtime: Runtime, model: nn.Module, clip: Tensor, folder: Path, threads: int
) -> tuple[Forward, float]:
    """``model`` as ``runtime`` runs it (written to ``folder`` and loaded back), checked against
    the module: the forward function and its relative error (0 for eager)."""
    import torch

    if runtime.file_name is None:
        return model, 0.0
    path = folder / runtime.file_name
    runtime.write(model, tuple(clip.shape[1:]), path)
    forward = runtime.load(path, clip.device.type, threads)
    check = example_clip(tuple(clip.shape[1:]), runtime.check_batch, seed=1, like=model)
    with torch.inference_mode(), full_precision():
        error = check_agrees(runtime.name, forward(check), model(check), clip.device.type)
    return forward, error


@contextmanager
def full_precision() -> Iterator[None]:
    """PyTorch's CUDA convolutions and matmuls in float32, not TF32, while a file is checked:
    the check compares two float32 computations, and TF32's 10-bit mantissa alone would move a
    deep network's logits by about 1e-3. The timed runs keep PyTorch's defaults, as a deployment
    would."""
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def check_agrees(name: str, got: Tensor, want: Tensor, device: str) -> float:
    """The relative error of ``got`` against ``want``; ``Mismatch`` over ``TOLERANCE``."""
    error = relative_error(got, want)
    limit = TOLERANCE[device.partition(":")[0]]
    if not error <= limit:  # NaN included
        why = f"relative error {error:.2e} over {limit:.0e}"
        raise Mismatch(f"{name}'s output differs from the PyTorch module's: {why}")
    return error


def relative_error(got: Tensor, want: Tensor) -> float:
    """``max |got - want| / max |want|`` (the absolute difference where ``want`` is all 0)."""
    if got.shape != want.shape:
        return float("inf")
    difference = float((got.float().cpu() - want.float().cpu()).abs().max())
    scale = float(want.float().abs().max())
    return difference / scale if scale > 0 else difference


def example_clip(
    clip_shape: tuple[int, ...], batch: int, *, seed: int, like: nn.Module | None = None
) -> Tensor:
    """A seeded normal clip of ``batch`` x ``clip_shape`` on ``like``'s device."""
    import torch

    clip = torch.randn((batch, *clip_shape), generator=torch.Generator().manual_seed(seed))
    parameter = next(like.parameters(), None) if like is not None else None
    return clip if parameter is None else clip.to(parameter.device)


# TorchScript


def _write_torchscript(model: nn.Module, example: Tensor, path: Path) -> None:
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        # Tracer warnings about shapes read as Python numbers: the geometry of a TVN is fixed by
        # its genome, and the file is checked on another batch size before it is used.
        warnings.simplefilter("ignore")
        # Batch norms are folded already; the frozen graph's own folds (constant adds and
        # multiplies into convolutions) gave wrong logits on CUDA for some networks.
        traced = torch.jit.trace(model.eval(), example)
        frozen = torch.jit.freeze(traced, optimize_numerics=False)
        frozen.save(str(path))


def _load_torchscript(path: Path, device: str, threads: int) -> Forward:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location=device)


# ONNX Runtime


def _write_onnx(model: nn.Module, example: Tensor, path: Path) -> None:
    import torch

    params = sum(p.numel() for p in model.parameters())
    with torch.no_grad(), warnings.catch_warnings(), _quiet("torch.onnx"):
        warnings.simplefilter("ignore")  # deprecation notices from inside the exporter
        torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            input_names=["clip"],
            output_names=["logits"],
            dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
            # A protobuf holds at most 2 GB: larger weights go to a file beside it.
            external_data=params * 4 > 1_800_000_000,
            optimize=True,
            verbose=False,
        )


def _load_onnx(path: Path, device: str, threads: int) -> Forward:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads  # 1: every kernel runs in the calling thread
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    if device.startswith("cuda"):
        providers = ["CUDAExecutionProvider"]
        session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        return _cuda_session_forward(session)
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return _cpu_session_forward(session)


def _cpu_session_forward(session) -> Forward:
    import torch

    def forward(clip: Tensor) -> Tensor:
        (logits,) = session.run(["logits"], {"clip": clip.detach().cpu().numpy()})
        return torch.from_numpy(logits)

    return forward


def _cuda_session_forward(session) -> Forward:
    """Input and output stay on the GPU (IO binding): what is timed is the network, not copies
    between host and device."""
    import numpy as np
    import torch

    def forward(clip: Tensor) -> Tensor:
        clip = clip.contiguous()
        torch.cuda.current_stream().synchronize()  # the clip is written before ONNX Runtime reads
        logits = torch.empty((clip.shape[0], _classes(session)), device=clip.device)
        binding = session.io_binding()
        index = clip.device.index or 0
        binding.bind_input("clip", "cuda", index, np.float32, tuple(clip.shape), clip.data_ptr())
        shape = tuple(logits.shape)
        binding.bind_output("logits", "cuda", index, np.float32, shape, logits.data_ptr())
        session.run_with_iobinding(binding)
        return logits

    return forward


def _classes(session) -> int:
    return int(session.get_outputs()[0].shape[-1])


def _missing_cuda_provider() -> str | None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return None
    return "onnxruntime has no CUDA execution provider here (install onnxruntime-gpu)"


# ExecuTorch


def _write_executorch(model: nn.Module, example: Tensor, path: Path) -> None:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # One batch size: a symbolic one leaves reshapes outside XNNPACK, cut into 60-90
        # pieces (TVN-1 1.5x slower on one thread); a device runs one clip at a time.
        program = torch.export.export(model.eval(), (example,))
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        path.write_bytes(lowered.to_executorch().buffer)


def _load_executorch(path: Path, device: str, threads: int) -> Forward:
    with warnings.catch_warnings():  # "this API is experimental"
        warnings.simplefilter("ignore")
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime, Verification

    # XNNPACK runs on ExecuTorch's threadpool, one per process (by default a thread per
    # performance core): reset to exactly ``threads``, 1 running in the calling thread.
    portable_lib._unsafe_reset_threadpool(threads)
    program = Runtime.get().load_program(path, verification=Verification.Minimal)
    method = program.load_method("forward")

    def forward(clip: Tensor) -> Tensor:
        (logits,) = method.execute([clip.contiguous()])
        return logits

    return forward


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Only errors from logger ``name`` (the ONNX exporter logs every optional op it skips)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


RUNTIMES: dict[str, Runtime] = {
    r.name: r
    for r in (
        Runtime("eager", ("cpu", "cuda"), None, "torch", None, None),
        Runtime(
            "torchscript",
            ("cpu", "cuda"),
            "model.ts",
            "torch",
            _write_torchscript,
            _load_torchscript,
        ),
        Runtime(
            "onnxruntime", ("cpu", "cuda"), "model.onnx", "onnxruntime", _write_onnx, _load_onnx
        ),
        Runtime(
            "executorch",
            ("cpu",),
            "model.pte",
            "executorch",
            _write_executorch,
            _load_executorch,
            batch=1,
        ),
    )
}


def check_runtime(name: str, device: str, *, source: str, field: str = "runtime") -> Runtime:
    """The runtime called ``name``, or an ``InputError`` naming ``field`` when there is none by
    that name or it cannot run on ``device`` here."""
    from tvnsearch.errors import InputError, Problem

    if name not in RUNTIMES:
        why = f"must be one of {list(RUNTIMES)}, but got {name!r}"
        raise InputError(source, [Problem(field, why)])
    why = RUNTIMES[name].missing(device)
    if why is not None:
        raise InputError(source, [Problem(field, why)])
    return RUNTIMES[name]
