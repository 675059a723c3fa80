"""`shrink_to_periphery_size`: the images `pretrain-vision --edge_object_scale` trains the edge stem on."""
import pytest
import torch
import torch.nn.functional as F

from centerfocus.tools.pretrain import shrink_to_periphery_size


@pytest.mark.parametrize("scale", [0.3, 0.5])
def test_shrunk_images_are_the_whole_image_resized_on_a_background_canvas(scale):
    size, stride = 64, 8
    background = torch.tensor([-1.0, -2.0, -3.0])
    images = torch.full((6, 3, size, size), 0.5)
    images[:, :, : size // 2, : size // 2] = 0.9  # a bright top-left quadrant, to check orientation
    out = shrink_to_periphery_size(images, scale, background, stride, torch.Generator().manual_seed(0))
    side = out.shape[-1]
    assert out.shape[:2] == (6, 3) and side % stride == 0 and side >= 1.5 * scale * size
    for image in out:
        inside = (image != background[:, None, None]).any(dim=0)
        rows, cols = inside.any(dim=1).nonzero().flatten(), inside.any(dim=0).nonzero().flatten()
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        # the shrunk side is in [0.85, 1.15] * scale * size; the paste can be cut by the canvas edge only on one side
        assert height <= round(1.15 * scale * size) and width <= round(1.15 * scale * size)
        assert max(height, width) >= round(0.85 * scale * size)
        assert torch.equal(image[:, ~inside], background[:, None].expand(-1, int((~inside).sum())))
        pasted = image[:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        # bilinear resizing of a constant is that constant, up to float32 rounding
        assert pasted.min() >= 0.5 - 1e-5 and pasted.max() <= 0.9 + 1e-5
    # an image pasted whole is exactly the resized original (the bright quadrant top-left)
    compared = 0
    for image in out:
        inside = (image != background[:, None, None]).any(dim=0)
        rows, cols = inside.any(dim=1).nonzero().flatten(), inside.any(dim=0).nonzero().flatten()
        if rows.min() == 0 or cols.min() == 0 or rows.max() == side - 1 or cols.max() == side - 1:
            continue  # cut by the canvas edge
        small = int(rows.max() - rows.min() + 1)
        reference = F.interpolate(images[:1], size=(small, small), mode="bilinear", antialias=True,
                                  align_corners=False)[0]
        assert torch.equal(image[:, rows.min():rows.max() + 1, cols.min():cols.max() + 1], reference)
        compared += 1
    assert compared >= 2  # this seed pastes most of the six whole
