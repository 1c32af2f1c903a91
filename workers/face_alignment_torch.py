"""5-point face alignment on the device (docs/method.md §5): batched similarity fit, one warp for all crops.

The same maths as :mod:`workers.face_alignment` (cv2/skimage on the host):

* :func:`similarity_matrices` is Umeyama's least-squares similarity (rotation,
  uniform scale, translation) from each face's 5 landmarks onto the crop
  template, for all faces at once (float64, batched 2x2 SVDs);
* :func:`warp_crops` cuts every crop of a video with ONE ``grid_sample`` call:
  the frames are stacked into one tall image with a one-pixel black border
  around each frame, every crop's sampling grid is offset into its own frame,
  and samples that fall outside their frame are sent off the image. The result
  equals ``cv2.warpAffine`` with bilinear interpolation and black borders up to
  cv2's 1/32-pixel fixed-point rounding (parity test: mean abs diff <= 2 grey levels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workers.face_alignment import alignment_template


def similarity_matrices(landmarks: torch.Tensor, size: int = 256, margin_scale: float = 1.3) -> torch.Tensor:
    """The 2x3 similarity matrices taking each face's landmarks to the crop template.

    Args:
        landmarks: (N, 5, 2) landmark positions in frame pixels, any float dtype, any device.
        size: Crop side in pixels.
        margin_scale: Zoom-out factor of the template.

    Returns:
        (N, 2, 3) float64 matrices (frame -> crop), on the landmarks' device; a face
        whose landmarks admit no similarity (all equal) gets a non-finite matrix.
    """
    src = landmarks.to(torch.float64)
    dst = torch.as_tensor(alignment_template(size, margin_scale), dtype=torch.float64, device=src.device)
    src_mean = src.mean(dim=1, keepdim=True)
    dst_mean = dst.mean(dim=0, keepdim=True)
    src_d = src - src_mean
    dst_d = (dst - dst_mean).expand_as(src_d)
    cov = dst_d.transpose(1, 2) @ src_d / src.shape[1]  # (N, 2, 2)
    u, s, vh = torch.linalg.svd(cov)
    # Umeyama's reflection fix: d = diag(1, sign(det U det V)) (skimage's rank cases reduce to this in 2-D).
    sign = torch.sign(torch.linalg.det(u) * torch.linalg.det(vh))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    d = torch.stack([torch.ones_like(sign), sign], dim=-1)  # (N, 2)
    rot = u @ torch.diag_embed(d) @ vh
    var = src_d.pow(2).mean(dim=1).sum(dim=-1)  # (N,)
    scale = (s * d).sum(dim=-1) / var  # inf/nan when every landmark is the same point
    linear = rot * scale[:, None, None]
    shift = dst_mean.transpose(0, 1)[None] - linear @ src_mean.transpose(1, 2)  # (N, 2, 1)
    return torch.cat([linear, shift], dim=2)


def warp_crops(
    frames: torch.Tensor, frame_of_crop: torch.Tensor, matrices: torch.Tensor, size: int, *, chunk: int = 256
) -> torch.Tensor:
    """Cut aligned crops out of a video's frames with one bilinear warp.

    Args:
        frames: uint8 (F, H, W, 3) RGB frames of one video (one size), on the device.
        frame_of_crop: (N,) long, the frame each crop is cut from.
        matrices: (N, 2, 3) frame -> crop similarity matrices (as :func:`similarity_matrices`).
        size: Crop side.
        chunk: Crops per ``grid_sample`` call at most (bounds the sampling grid's memory).

    Returns:
        uint8 (N, 3, size, size) crops on the frames' device (NCHW, as the detector takes them).
    """
    n = matrices.shape[0]
    n_frames, height, width, channels = frames.shape
    if n == 0:
        return torch.empty((0, channels, size, size), dtype=torch.uint8, device=frames.device)
    device = frames.device
    # Inverse maps: crop pixel (u, v) -> frame pixel (x, y), as cv2.warpAffine applies them.
    full = torch.zeros((n, 3, 3), dtype=torch.float64, device=device)
    full[:, :2] = matrices.to(device=device, dtype=torch.float64)
    full[:, 2, 2] = 1.0
    inverse = torch.linalg.inv(full)[:, :2].float()  # float32 from here: 1e-4 px at 4K, half the memory
    # One tall image: each frame with a one-pixel black border, so bilinear samples at a frame's
    # edge blend with black (cv2's BORDER_CONSTANT 0) and never with the neighbouring frame.
    padded = F.pad(frames.permute(0, 3, 1, 2).float(), (1, 1, 1, 1))  # (F, C, H+2, W+2)
    tall = padded.permute(1, 0, 2, 3).reshape(1, channels, n_frames * (height + 2), width + 2)
    v, u = torch.meshgrid(torch.arange(size, device=device), torch.arange(size, device=device), indexing="ij")
    crop_px = torch.stack([u, v, torch.ones_like(u)], dim=-1).reshape(-1, 3).float()  # (S*S, 3)
    offsets = frame_of_crop.to(device=device, dtype=torch.float32) * (height + 2)
    # Crops go through in chunks only to bound the grid's memory (~1 MB a crop); one call per chunk.
    chunks = [
        _sample(tall, inverse[i : i + chunk], offsets[i : i + chunk], crop_px, (height, width), size)
        for i in range(0, n, chunk)
    ]
    return torch.cat(chunks).round_().clamp_(0, 255).to(torch.uint8)


def _sample(
    tall: torch.Tensor,
    inverse: torch.Tensor,
    offsets: torch.Tensor,
    crop_px: torch.Tensor,
    frame_hw: tuple[int, int],
    size: int,
) -> torch.Tensor:
    """grid_sample of one chunk of crops from the tall image -> float (n, C, size, size)."""
    height, width = frame_hw
    n, channels = inverse.shape[0], tall.shape[1]
    total_h, total_w = tall.shape[-2:]
    src = torch.einsum("nij,pj->npi", inverse, crop_px)  # (n, S*S, 2): x, y in frame pixels
    x, y = src[..., 0], src[..., 1]
    inside = (x > -1) & (x < width) & (y > -1) & (y < height)
    gx = (2.0 * (x + 1.0) + 1.0) / total_w - 1.0  # align_corners=False normalisation
    gy = (2.0 * (y + 1.0 + offsets[:, None]) + 1.0) / total_h - 1.0
    far = torch.full_like(gx, -2.0)  # off the image: zeros padding
    grid = torch.stack([torch.where(inside, gx, far), torch.where(inside, gy, far)], dim=-1)
    out = F.grid_sample(tall, grid.reshape(1, n * size, size, 2), mode="bilinear", padding_mode="zeros",
                        align_corners=False)  # fmt: skip
    return out.reshape(channels, n, size, size).permute(1, 0, 2, 3)
