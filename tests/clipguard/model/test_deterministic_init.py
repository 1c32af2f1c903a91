"""Every process builds the same untrained model: one version string = one model."""

import subprocess
import sys

import numpy as np
import torch

from clipguard.model import CropScorer, DetectorConfig

CFG = DetectorConfig(arch="ViT-Tiny-test", pretrained="none", device="cpu")
_SCORE = (
    "import numpy as np; from clipguard.model import CropScorer, DetectorConfig; "
    "c = np.random.default_rng(0).integers(0, 255, (2, 256, 256, 3), dtype=np.uint8); "
    "print(CropScorer.from_config(DetectorConfig(arch='ViT-Tiny-test', pretrained='none', device='cpu'))"
    ".score(c).tolist())"
)


def test_random_init_is_the_same_in_every_process_and_leaves_the_global_rng_alone():
    crops = np.random.default_rng(0).integers(0, 255, (2, 256, 256, 3), dtype=np.uint8)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    here = CropScorer.from_config(CFG).score(crops)
    assert torch.equal(torch.rand(1), before)  # the build did not consume the caller's RNG
    other = subprocess.run([sys.executable, "-c", _SCORE], capture_output=True, text=True, check=True)
    assert np.allclose(eval(other.stdout.strip().splitlines()[-1]), here, atol=1e-6)
