"""How a segmentation map is shown to the networks: ``model.seg_mode`` rgb or classes.

Everything that differs between the two modes lives here, so the losses, the step, the sample
grids, ``cyclegan-generate`` and ``cyclegan-eval`` each call one method instead of branching:

* ``rgb`` (the seed's): a map is a 3-channel image in [-1, 1], the class ids drawn in the training
  palette; G draws one through tanh and its colours are decoded back by nearest colour.
* ``classes``: a real map is a one-hot (151, H, W) tensor made on the device from the loader's
  ``label``; G predicts 151 logits per pixel. D_seg and F see G's output as a straight-through
  Gumbel-softmax sample (Jang et al., 2017; Maddison et al., 2017): exactly one-hot in the forward
  pass, like a real map, so D_seg cannot tell fakes by their "one-hotness" (a softmax would be
  spread out, a real map never is), while the backward pass takes the gradient of the tempered
  softmax, so G still learns through D_seg and F. The replay buffer keeps the samples as uint8
  class ids (lossless, 1/604 of the float one-hot size) and rebuilds them on use.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cyclegan.palette import IGNORE_INDEX, NUM_CLASSES, ids_to_seg, seg_to_ids

NUM_IDS = NUM_CLASSES + 1
"""Class ids 0..150: 0 is unlabeled."""
MODES = ("rgb", "classes")


def one_hot(
    ids: torch.Tensor, dtype: torch.dtype = torch.float32, memory_format: torch.memory_format = torch.contiguous_format
) -> torch.Tensor:
    """Class ids (B, H, W) -> one-hot (B, 151, H, W), written straight into the requested layout
    (``F.one_hot`` would first build an int64 tensor eight times the size)."""
    batch, height, width = ids.shape
    out = torch.empty(batch, NUM_IDS, height, width, dtype=dtype, device=ids.device, memory_format=memory_format)
    return out.zero_().scatter_(1, ids.long().clamp(0, NUM_CLASSES)[:, None], 1.0)


def straight_through_sample(logits: torch.Tensor, temperature: float, noise: float = 1.0) -> torch.Tensor:
    """A hard sample over dim 1: forward exactly one-hot (``hard + 0``), backward the gradient of
    ``softmax((logits + noise * gumbel) / temperature)``. ``noise`` 1 is the Gumbel-softmax sample, 0 the
    straight-through argmax. Noise from the global generator of the logits' device (saved with the
    training state)."""
    logits = logits.float()
    if noise:
        logits = logits - noise * torch.empty_like(logits).exponential_().log()  # -log(Exp(1)) ~ Gumbel(0, 1)
    soft = (logits / temperature).softmax(1)
    hard = torch.zeros_like(soft).scatter_(1, soft.argmax(1, keepdim=True), 1.0)
    return hard + (soft - soft.detach())


def masked_cross_entropy(logits: torch.Tensor, ids: torch.Tensor, ignore: int | None) -> torch.Tensor:
    """Mean cross-entropy over the pixels whose id is not ``ignore``; 0, not NaN, when there are
    none (a crop that is all unlabeled must not turn the step into a skipped non-finite one)."""
    ids = ids.long()
    per_pixel = F.cross_entropy(logits.float(), ids, reduction="none")
    if ignore is None:
        return per_pixel.mean()
    keep = (ids != ignore).float()
    return (per_pixel * keep).sum() / keep.sum().clamp(min=1.0)


class RgbEncoding:
    """``model.seg_mode: rgb``: maps are palette colours in [-1, 1] (3 channels)."""

    mode = "rgb"
    coloured = True
    """Whether the loaders must deliver ``seg`` (the label in the training palette)."""

    def real(self, batch: dict[str, Any], memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        """What F and D_seg see of a real map."""
        return batch["seg"].contiguous(memory_format=memory_format)

    def sample(self, output: torch.Tensor) -> torch.Tensor:
        """What F and D_seg see of G's output during training."""
        return output

    def hard(self, output: torch.Tensor) -> torch.Tensor:
        """What F is given of G's output at inference (sample grids, cycles shown to people)."""
        return output

    def store(self, fake: torch.Tensor) -> torch.Tensor:
        """What the replay buffer keeps of a fake map."""
        return fake

    def restore(self, stored: torch.Tensor) -> torch.Tensor:
        return stored

    def cycle_loss(self, reconstruction: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Unweighted seg cycle: L1 between G(F(y)) and y."""
        return F.l1_loss(reconstruction.float(), batch["seg"].float())

    def paired_loss(self, output: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Unweighted supervised term of G(photo) against its aligned map: L1 to the coloured map."""
        return F.l1_loss(output.float(), batch["seg"].float())

    def ids(self, output: torch.Tensor) -> torch.Tensor:
        """Class ids (B, H, W) of G's output or of a map in this encoding: nearest palette colour."""
        return seg_to_ids(output)

    def from_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Model input (for F, D_seg) from class ids (B, H, W)."""
        return ids_to_seg(ids)

    def picture(self, output: torch.Tensor) -> torch.Tensor:
        """A 3-channel image in [-1, 1] for sample grids: G's colours as drawn."""
        return output.float()


class ClassEncoding(RgbEncoding):
    """``model.seg_mode: classes``: maps are one-hot class maps (151 channels), G's output logits."""

    mode = "classes"
    coloured = False

    def __init__(self, temperature: float = 1.0, noise: float = 1.0) -> None:
        self.temperature, self.noise = temperature, noise

    def real(self, batch: dict[str, Any], memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        return one_hot(batch["label"], memory_format=memory_format)

    def sample(self, output: torch.Tensor) -> torch.Tensor:
        return straight_through_sample(output, self.temperature, self.noise)

    def hard(self, output: torch.Tensor) -> torch.Tensor:
        return one_hot(output.argmax(1))

    def store(self, fake: torch.Tensor) -> torch.Tensor:
        return fake.detach().argmax(1).to(torch.uint8)

    def restore(self, stored: torch.Tensor) -> torch.Tensor:
        return one_hot(stored)

    def cycle_loss(self, reconstruction: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Cross-entropy of G(F(y)) against y's ids over every pixel: F was shown the unlabeled
        regions as a class of their own, so reconstructing them is part of the cycle."""
        return masked_cross_entropy(reconstruction, batch["label"], ignore=None)

    def paired_loss(self, output: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Cross-entropy of G(photo) against the label, unlabeled pixels ignored (no ground truth)."""
        return masked_cross_entropy(output, batch["label"], ignore=IGNORE_INDEX)

    def ids(self, output: torch.Tensor) -> torch.Tensor:
        return output.argmax(1)

    def from_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return one_hot(ids)

    def picture(self, output: torch.Tensor) -> torch.Tensor:
        """The argmax, drawn in the training palette."""
        return ids_to_seg(output.argmax(1)).float()


SegEncoding = RgbEncoding | ClassEncoding


def encoding_for(mode: str, temperature: float = 1.0, noise: float = 1.0) -> SegEncoding:
    """The encoding of ``model.seg_mode``."""
    if mode == "rgb":
        return RgbEncoding()
    if mode == "classes":
        return ClassEncoding(temperature, noise)
    raise ValueError(f"seg_mode must be one of {', '.join(MODES)}, got {mode!r}")


def mode_of_export(meta: dict[str, Any]) -> str:
    """The seg mode an exported network was trained in: recorded in the file since classes mode
    exists; a file without it is from an rgb run (the only mode before)."""
    return meta.get("seg_mode", "rgb")
