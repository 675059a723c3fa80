"""Write tests/fixtures/saved_before_restructuring with the code of an earlier commit (kept to show how the fixture was
made; it imports that checkout's package and tests, not this one's):

    git worktree add /tmp/old 8355b57
    cd /tmp && python /path/to/scripts/make_saved_folder_fixture.py /tmp/old /path/to/tests/fixtures/saved_before_restructuring
"""

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image


def main() -> None:
    old, out = Path(sys.argv[1]), Path(sys.argv[2])
    sys.path[:0] = [str(old / "src"), str(old)]
    centerfocus = importlib.import_module("centerfocus")
    assert centerfocus.__file__.startswith(str(old)), centerfocus.__file__
    conftest = importlib.import_module("tests.conftest")
    tokenizer = importlib.import_module("centerfocus.tools.tokenizer").train_caption_tokenizer(conftest.CAPTIONS,
                                                                                              vocab_size=120)
    processor = centerfocus.CenterFocusProcessor(
        centerfocus.CenterFocusImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    model = conftest.build_tiny_model(tokenizer, image_tokenizer_type="foveated", edge_compensation_type="stem",
                                      stem_norm_type="batch")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(4)]
    for index, image in enumerate(images):
        image.save(out / f"image_{index}.png")
    inputs = processor(images=images)
    with torch.no_grad():
        tokens = {"greedy": model.generate(**inputs).tolist(), "beam": model.generate(**inputs, num_beams=3).tolist()}
    (out / "expected_tokens.json").write_text(json.dumps(
        {"saved_by": f"centerfocus at {old}, transformers {transformers.__version__}", **tokens}))


if __name__ == "__main__":
    main()
