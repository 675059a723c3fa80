"""Captioning helpers that commands, benchmarks and apps share: batched captions of PIL images, and the learned
centre weighting as a picture."""

from typing import Optional

import numpy as np
import torch

from ..modeling_centerfocus import CenterFocusCenterWeighting, CenterFocusForConditionalGeneration
from .progress import progress


def caption_images(model, processor, images, prompts: Optional[list[str]] = None, batch_size: int = 64,
                   **generate_kwargs) -> list[str]:
    """Greedy (or `generate_kwargs`) captions for a list of PIL images, with one optional prompt per image."""
    captions = []
    model.eval()
    with torch.inference_mode(), progress(total=len(images), desc="Captioning", unit="image") as bar:
        for start in range(0, len(images), batch_size):
            texts = None if prompts is None else prompts[start:start + batch_size]
            inputs = processor(images=images[start:start + batch_size], text=texts)
            output = model.generate(**inputs, **generate_kwargs)
            captions += [c.strip() for c in processor.batch_decode(output, skip_special_tokens=True)]
            bar.update(len(output))
    return captions


def centre_weighting_map(model: CenterFocusForConditionalGeneration, size: int) -> np.ndarray:
    """The product of every stem stage's learned centre weighting, resized to `size x size` and scaled to [0, 1]."""
    total = torch.ones(size, size)
    for module in model.modules():
        if isinstance(module, CenterFocusCenterWeighting):
            total = total * module.mask(size, size).detach().float()
    total = total - total.min()
    return (total / total.max().clamp(min=1e-8)).numpy()
