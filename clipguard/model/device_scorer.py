"""The detector at the device's speed: bf16 weights, fixed batch buckets, compiled once, copies overlapped.

:class:`DeviceScorer` wraps a loaded :class:`~clipguard.model.inference.CropScorer`
(same weights, same checkpoint, same version string) and changes only how a
batch is run:

* **weights in bf16** (the tower; the head and the L2 normalisation stay fp32,
  ``NormLinearHead`` casts to fp32 itself), instead of fp32 weights under
  autocast: no per-call weight casts;
* **fused attention**: open_clip's blocks call ``nn.MultiheadAttention`` with
  ``need_weights=False``, which runs ``scaled_dot_product_attention``; on CUDA
  the call is restricted to the fused kernels (flash, memory-efficient, cuDNN),
  so a shape without one fails loudly instead of using the slow math kernel;
* **fixed batch buckets**: a batch is cut into chunks of the largest bucket and
  each chunk is padded (zeros) to the smallest bucket that holds it, so the
  compiled graphs (and CUDA graphs with ``reduce-overhead``) see a few shapes
  only, all compiled by :meth:`DeviceScorer.warm_up` at actor start;
* **preprocessing on the device** (``clip_preprocess`` inside the compiled
  function): only uint8 crosses the bus, from **pinned host buffers** with
  non-blocking copies; crops already on the device (the fused GPU stage's) are
  used in place.

On the CPU the serving path stays the plain fp32 ``CropScorer`` (bf16 on the CPU
is refused by ``resolve_autocast_dtype``); this class runs on the CPU only for
tests of its batching and bf16 parity (``weights_dtype`` set explicitly).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from clipguard.errors import ConfigError, ModelError
from clipguard.model.head import p_fake
from clipguard.model.inference import CropScorer
from clipguard.model.preprocess import CropBatch, as_uint8_nchw, clip_preprocess

logger = logging.getLogger(__name__)

DEFAULT_BUCKETS = (16, 64, 128, 256)
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")


def plan_batches(n: int, buckets: Sequence[int]) -> list[tuple[int, int, int]]:
    """How ``n`` crops go through fixed-size batches.

    Args:
        n: Crops to score.
        buckets: Allowed batch sizes (any order, positive).

    Returns:
        ``(start, stop, bucket)`` per forward pass: chunks of the largest bucket,
        the last one padded to the smallest bucket that holds it.
    """
    sizes = sorted(set(buckets))
    if not sizes or sizes[0] < 1:
        msg = f"batch buckets must be positive sizes, got {tuple(buckets)}"
        raise ConfigError(msg)
    plan = []
    for start in range(0, n, sizes[-1]):
        stop = min(n, start + sizes[-1])
        plan.append((start, stop, next(b for b in sizes if b >= stop - start)))
    return plan


class DeviceScorer:
    """p_fake for uint8 crops, with the speed-ups of the module docstring.

    Args:
        scorer: A loaded scorer; its detector is changed in place (weights cast).
        weights_dtype: ``torch.bfloat16`` to cast the tower's weights, None to keep fp32.
        buckets: Fixed batch sizes.
        compile_mode: ``none`` or a ``torch.compile`` mode (``reduce-overhead`` adds CUDA graphs).
        pad_to_buckets: pad partial batches to their bucket (default: when compiled; eager runs need
            no fixed shapes, and on a CPU padding would only add work).

    Raises:
        ConfigError: bad buckets or compile mode.
    """

    def __init__(
        self,
        scorer: CropScorer,
        *,
        weights_dtype: torch.dtype | None,
        buckets: Sequence[int] = DEFAULT_BUCKETS,
        compile_mode: str = "none",
        pad_to_buckets: bool | None = None,
    ) -> None:
        if compile_mode not in COMPILE_MODES:
            msg = f"compile mode must be one of {COMPILE_MODES}, got {compile_mode!r}"
            raise ConfigError(msg)
        plan_batches(1, buckets)  # validates the buckets
        self.scorer = scorer
        self.version = scorer.version
        self.device = scorer.device
        self.weights_dtype = weights_dtype
        self.buckets = tuple(sorted(set(buckets)))
        self.compile_mode = compile_mode
        self.pad_to_buckets = compile_mode != "none" if pad_to_buckets is None else pad_to_buckets
        self._crop_size = scorer.config.preprocess.crop_size
        detector = scorer.detector
        if weights_dtype is not None:
            detector.tower.to(weights_dtype)  # the head keeps fp32 weights
        self._forward: Callable[[torch.Tensor], torch.Tensor] = self._p_fake
        if compile_mode != "none":
            self._forward = torch.compile(self._p_fake, mode=compile_mode, dynamic=False)
        self._cuda = self.device.type == "cuda"
        # Two pinned staging buffers, alternated, each guarded by the event of its last copy.
        self._staging: list[torch.Tensor] = []
        self._copied: list[torch.cuda.Event | None] = []
        if self._cuda:
            shape = (self.buckets[-1], self._crop_size, self._crop_size, 3)
            self._staging = [torch.empty(shape, dtype=torch.uint8, pin_memory=True) for _ in range(2)]
            self._copied = [None, None]
        self._turn = 0

    @classmethod
    def for_serving(cls, scorer: CropScorer, *, buckets: Sequence[int], compile_mode: str) -> DeviceScorer:
        """The serving setup for ``scorer``'s device: bf16 weights where it runs bf16 (CUDA), compile on CUDA only.

        On the CPU (fp32, no compile) this is the plain scorer's arithmetic with
        bucket padding around it.
        """
        on_cuda = scorer.device.type == "cuda"
        dtype = torch.bfloat16 if scorer.autocast_dtype == torch.bfloat16 else None
        return cls(scorer, weights_dtype=dtype, buckets=buckets, compile_mode=compile_mode if on_cuda else "none")

    def _attention_kernels(self) -> contextlib.AbstractContextManager:
        if not self._cuda:
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
        return sdpa_kernel(fused)

    def _p_fake(self, crops: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW crops on the device -> fp32 p_fake (preprocessing, tower, fp32 head)."""
        pixels = clip_preprocess(crops, self.scorer.config.preprocess)
        if self.weights_dtype is not None:
            pixels = pixels.to(self.weights_dtype)
        return p_fake(self.scorer.detector(pixels).logits)

    def _to_device(self, chunk: torch.Tensor) -> torch.Tensor:
        """A host chunk through a pinned buffer with a non-blocking copy; device chunks as they are."""
        if not self._cuda or chunk.device.type == "cuda":
            return chunk.to(self.device)
        turn = self._turn
        self._turn = 1 - turn
        if self._copied[turn] is not None:
            self._copied[turn].synchronize()  # its previous copy has left the buffer
        staging = self._staging[turn][: chunk.shape[0]]
        staging.copy_(chunk.permute(0, 2, 3, 1))  # NHWC in the buffer: the layout crops arrive in
        on_device = staging.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        event = torch.cuda.Event()
        event.record()
        self._copied[turn] = event
        return on_device

    def score(self, crops: CropBatch) -> np.ndarray:
        """p_fake for each crop (host or device uint8, (N, H, W, 3) or (N, 3, H, W)).

        Raises:
            ModelError: bad input, or non-finite scores.
        """
        batch = as_uint8_nchw(crops)
        if batch.shape[0] == 0:
            return np.empty(0, dtype=np.float32)
        size = self._crop_size
        if tuple(batch.shape[-2:]) != (size, size):
            msg = f"crops must be {size}x{size} (configured crop_size), got {tuple(batch.shape[-2:])}"
            raise ModelError(msg)
        out = []
        with torch.inference_mode(), self._attention_kernels():
            for start, stop, bucket in plan_batches(batch.shape[0], self.buckets):
                chunk = self._to_device(batch[start:stop])
                if self.pad_to_buckets and bucket > chunk.shape[0]:
                    chunk = torch.cat([chunk, chunk.new_zeros((bucket - chunk.shape[0], *chunk.shape[1:]))])
                if self.compile_mode == "reduce-overhead":
                    torch.compiler.cudagraph_mark_step_begin()
                # A clone: CUDA-graph outputs are overwritten by the next replay.
                out.append(self._forward(chunk.contiguous())[: stop - start].clone())
        scores = torch.cat(out).float().cpu().numpy()
        if not np.isfinite(scores).all():
            msg = f"detector {self.version} produced non-finite scores for {int((~np.isfinite(scores)).sum())} crops"
            raise ModelError(msg)
        return scores

    def warm_up(self) -> float:
        """Run (and so compile) every bucket once; returns the seconds it took. Call once, at actor start.

        Eager unpadded scorers have nothing to compile or capture: no-op.
        """
        start = time.perf_counter()
        if not self.pad_to_buckets and self.compile_mode == "none":
            return 0.0
        size = self._crop_size
        # CUDA graphs (reduce-overhead) are recorded on a shape's second run, after one warm-up run.
        runs = 3 if self.compile_mode == "reduce-overhead" else 1
        for bucket in self.buckets:
            zeros = torch.zeros((bucket, 3, size, size), dtype=torch.uint8, device=self.device)
            for _ in range(runs):
                self.score(zeros)
        if self._cuda:
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        logger.info(
            "detector %s warmed up on %s: buckets %s, weights %s, compile %s, %.1fs",
            self.version, self.device, self.buckets, self.weights_dtype or "fp32", self.compile_mode, seconds,
        )  # fmt: skip
        return seconds
