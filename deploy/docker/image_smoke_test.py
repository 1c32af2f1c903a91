"""Smoke test of an installed clipguard environment: the image build runs it, and so do the tests.

Checks what a `clipguard --help` never touches, each a failure seen or possible in production:

* the native stacks import: cv2, insightface, onnxruntime, torch, open_clip, ray (+ Ray Train), kafka, redis;
* exactly one OpenCV, the headless build: its ``cv2`` extension is the file that wheel installed, and it
  loads no libGL / X11 and misses no shared library (the slim image has no libGL.so.1, so the GUI
  build's ``import cv2`` fails there at run time);
* the stream's configuration and the detector's model configuration build from the defaults, and a
  tiny detector builds and scores one crop on the CPU (open_clip, torch and the packaged model configs);
* for ``--variant cuda``: the GPU extras are installed (onnx2torch imports; PyNvVideoCodec is present:
  it needs the NVIDIA driver to import, which a build machine does not have).

Usage: ``python image_smoke_test.py [--variant cpu|cuda]``; exit 0 and one summary line, or an error.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

NATIVE_MODULES = ("cv2", "insightface", "onnxruntime", "torch", "open_clip", "ray", "ray.train", "kafka", "redis")
OPENCV_DISTRIBUTIONS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python",
                        "opencv-contrib-python-headless")  # fmt: skip
GUI_LIBRARIES = ("libGL.so", "libGLX", "libX11", "libgtk", "libQt")


def _distribution_names() -> set[str]:
    return {dist.metadata["Name"].lower().replace("_", "-") for dist in importlib.metadata.distributions()}


def check_opencv() -> str:
    """Exactly one OpenCV, the headless one, and its extension needs no GUI library."""
    installed = sorted(_distribution_names() & set(OPENCV_DISTRIBUTIONS))
    if installed != ["opencv-python-headless"]:
        msg = f"expected exactly opencv-python-headless, found OpenCV distributions {installed}"
        raise SystemExit(msg)
    import cv2

    extension = next(Path(cv2.__file__).parent.glob("cv2*.so"))
    files = importlib.metadata.files("opencv-python-headless") or []
    owned = {Path(str(f.locate())).resolve() for f in files}
    if extension.resolve() not in owned:
        msg = f"{extension} is not the file opencv-python-headless installed (another OpenCV overwrote it)"
        raise SystemExit(msg)
    linked = subprocess.run(["ldd", str(extension)], capture_output=True, text=True, check=True).stdout
    bad = [line.strip() for line in linked.splitlines() if "not found" in line or any(g in line for g in GUI_LIBRARIES)]
    if bad:
        msg = f"{extension.name} needs GUI or missing libraries: {bad}"
        raise SystemExit(msg)
    return f"cv2 {cv2.__version__} (headless, {len(linked.splitlines())} libraries, none GUI)"


def check_model_config() -> str:
    """The stream's config and the detector's from the defaults; a tiny detector scores a crop on the CPU."""
    import numpy as np
    import open_clip

    from clipguard.config import ClipguardConfig
    from clipguard.model import CropScorer, DetectorConfig

    cfg = ClipguardConfig()
    served = DetectorConfig.for_stream(cfg.model, cfg.stream.batch_size)
    if open_clip.get_model_config(served.arch) is None:
        msg = f"open_clip has no model config for the served architecture {served.arch}"
        raise SystemExit(msg)
    tiny = DetectorConfig(arch="ViT-Micro-test", pretrained="none", device="cpu")
    scores = CropScorer.from_config(tiny, None).score(np.zeros((1, 256, 256, 3), dtype=np.uint8))
    if scores.shape != (1,) or not 0.0 <= float(scores[0]) <= 1.0:
        msg = f"the tiny detector returned {scores!r} for one crop"
        raise SystemExit(msg)
    return f"model config {served.arch}/{served.pretrained}; tiny detector scored one crop"


def check_gpu_extras() -> str:
    importlib.import_module("onnx2torch")
    if importlib.util.find_spec("PyNvVideoCodec") is None:
        msg = "PyNvVideoCodec is not installed in the cuda variant"
        raise SystemExit(msg)
    return "GPU extras onnx2torch, PyNvVideoCodec"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args(argv)
    gpu = [check_gpu_extras()] if args.variant == "cuda" else []  # first: the cheapest to fail
    for name in NATIVE_MODULES:
        importlib.import_module(name)
    parts = [f"imported {', '.join(NATIVE_MODULES)}", check_opencv(), check_model_config(), *gpu]
    print("image smoke test passed: " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
