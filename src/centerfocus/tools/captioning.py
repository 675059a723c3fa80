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


def draw_centre_weighting(axis, image, weighting: np.ndarray) -> None:
    """Draw `image`, resized to the weighting's size, on a matplotlib axis with the weighting over it: tinted, with
    contours at 1/4, 1/2 and 3/4."""
    axis.imshow(np.asarray(image.convert("RGB").resize(weighting.shape[::-1])))
    axis.imshow(weighting, cmap="magma", alpha=0.25)
    axis.contour(weighting, levels=[0.25, 0.5, 0.75], colors="white", linewidths=0.8)


def focus_map_picture(model: CenterFocusForConditionalGeneration, image, size: int = 256):
    """A `size x size` PIL picture of `image` with the model's learned centre weighting drawn over it (matplotlib's
    Agg canvas directly, so no pyplot state is touched and apps may call it from several threads)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    figure = Figure(figsize=(size / 100, size / 100), dpi=100)
    canvas = FigureCanvasAgg(figure)
    axis = figure.add_axes((0, 0, 1, 1))
    axis.axis("off")
    draw_centre_weighting(axis, image, centre_weighting_map(model, size))
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())
