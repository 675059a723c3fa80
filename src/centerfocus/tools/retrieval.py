"""Retrieval-augmented captioning (design item 10): an index of image embedding -> caption built from a training set,
and captioning that retrieves the k nearest captions and gives them to the encoder as the text prompt.

Embeddings are the mean of a CenterFocus encoder's image-token outputs (no prompt), L2-normalised; search is exact
cosine similarity with a torch matrix product (the training sets here are small; `faiss.IndexFlatIP` would return the
same neighbours for large ones).
"""

import functools
import json
import logging
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from ..loading_centerfocus import check_safetensors_file
from ..modeling_centerfocus import CenterFocusForConditionalGeneration
from ..processing_centerfocus import CenterFocusProcessor
from .progress import progress


logger = logging.getLogger(__name__)

SEPARATOR = " ; "


@torch.inference_mode()
def image_embeddings(model: CenterFocusForConditionalGeneration, processor: CenterFocusProcessor, images: list,
                     batch_size: int = 64) -> torch.Tensor:
    """`(len(images), D)` L2-normalised mean encoder states of the image tokens."""
    model.eval()
    chunks = []
    for start in progress(range(0, len(images), batch_size), desc="Embedding images", unit="batch"):
        pixel_values = processor(images=images[start:start + batch_size])["pixel_values"]
        hidden = model.get_encoder()(pixel_values).last_hidden_state  # (B, N, D)
        chunks.append(torch.nn.functional.normalize(hidden.float().mean(1), dim=-1))
    return torch.cat(chunks)


def load_embedder(model_dir: str) -> tuple[CenterFocusForConditionalGeneration, CenterFocusProcessor]:
    """The model and processor whose encoder embeds images for an index."""
    return CenterFocusForConditionalGeneration.from_pretrained(model_dir), CenterFocusProcessor.from_pretrained(model_dir)


class CaptionIndex:
    """Image embeddings with their captions; `search` returns the exact k nearest neighbours by cosine similarity."""

    def __init__(self, embeddings: torch.Tensor, captions: list[str], embedding_model: Optional[str] = None):
        if embeddings.shape[0] != len(captions):
            raise ValueError(f"{embeddings.shape[0]} embeddings but {len(captions)} captions.")
        self.embeddings = embeddings
        self.captions = captions
        self.embedding_model = embedding_model

    @classmethod
    def build(cls, model_dir: str, images: list, captions: list[str]) -> "CaptionIndex":
        return cls(image_embeddings(*load_embedder(model_dir), images), list(captions), str(Path(model_dir).resolve()))

    @functools.cached_property
    def embedder(self) -> tuple[CenterFocusForConditionalGeneration, CenterFocusProcessor]:
        """The index's own embedding model and processor, loaded once per index."""
        if self.embedding_model is None:
            raise ValueError("This caption index records no embedding model to embed query images with; build the "
                             "index with `centerfocus index --model DIR`.")
        return load_embedder(self.embedding_model)

    def save(self, folder: str) -> Path:
        """Write the index to `folder`. An embedding model inside `folder` is recorded relative to it, so the index
        and its model can be moved together; any other model by its absolute path."""
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        embedding_model = self.embedding_model
        if embedding_model is not None and Path(embedding_model).resolve().is_relative_to(path.resolve()):
            embedding_model = Path(embedding_model).resolve().relative_to(path.resolve()).as_posix()
        save_file({"embeddings": self.embeddings.contiguous()}, path / "embeddings.safetensors")
        (path / "captions.json").write_text(json.dumps({"captions": self.captions,
                                                        "embedding_model": embedding_model}))
        return path

    @classmethod
    def load(cls, folder: str) -> "CaptionIndex":
        """Read an index written by `save`. Raises ValueError when a file is missing or the embedding model it was
        built with no longer exists (without that model, query images cannot be embedded like the index's)."""
        path = Path(folder)
        for name in ("embeddings.safetensors", "captions.json"):
            if not (path / name).is_file():
                raise ValueError(f"{folder} is not a caption index (no {name}); build one with `centerfocus index`.")
        check_safetensors_file(path / "embeddings.safetensors")  # OSError naming a truncated or corrupted file
        try:
            meta = json.loads((path / "captions.json").read_text())
        except (ValueError, UnicodeDecodeError) as error:
            raise OSError(f"{path / 'captions.json'} is damaged ({error}); rebuild the index with `centerfocus "
                          "index` or copy it again.") from None
        embedding_model = meta.get("embedding_model")
        if embedding_model is not None:
            model_path = path / embedding_model  # a relative path is relative to the index; an absolute one stays
            if not model_path.is_dir():
                raise ValueError(
                    f"Caption index {folder} was built with the embedding model {model_path}, which no longer exists "
                    f"(moved or deleted). Rebuild the index with `centerfocus index --model MODEL_DIR --dataset DATA "
                    f"--output {folder}`, or, if the model was moved, set \"embedding_model\" in "
                    f"{path / 'captions.json'} to its new folder.")
            embedding_model = str(model_path.resolve())
        return cls(load_file(path / "embeddings.safetensors")["embeddings"], meta["captions"], embedding_model)

    def search(self, queries: torch.Tensor, k: int, exclude_identical: bool = False):
        """`(scores, indices)`, each `(Q, k)`, best first. `exclude_identical` skips entries with the query's own
        embedding (similarity 1), so a training image never retrieves its own caption."""
        similarity = queries.float() @ self.embeddings.float().t()  # (Q, N)
        if exclude_identical:
            similarity = similarity.masked_fill(similarity > 1 - 1e-5, float("-inf"))
        return similarity.topk(min(k, similarity.shape[1]), dim=1)

    def prompts(self, queries: torch.Tensor, k: int, exclude_identical: bool = False) -> list[str]:
        """The k nearest captions of each query joined into one prompt."""
        _, indices = self.search(queries, k, exclude_identical)
        return [SEPARATOR.join(self.captions[i] for i in row) for row in indices.tolist()]


def retrieval_prompts(index: CaptionIndex, images: list, k: int, exclude_identical: bool = False) -> list[str]:
    """Prompts for `images` from `index`, embedded with the index's own embedding model."""
    return index.prompts(image_embeddings(*index.embedder, images), k, exclude_identical)


def main(argv: Optional[list[str]] = None) -> Path:
    """`centerfocus index --model DIR --dataset DATA --output INDEX_DIR [--split train]`: embed every image of the
    split with the model's encoder and save the index (safetensors embeddings + captions)."""
    import argparse

    from .caption_data import check_caption_dataset, load_image_dataset

    parser = argparse.ArgumentParser(prog="centerfocus index", description=main.__doc__)
    parser.add_argument("--model", required=True, help="A CenterFocus folder whose encoder embeds the images.")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--caption_column", default="text")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    split, _ = check_caption_dataset(load_image_dataset(args.dataset), args.image_column, args.caption_column,
                                     train_split=args.split, validation_fraction=0)
    index = CaptionIndex.build(args.model, list(split[args.image_column]), list(split[args.caption_column]))
    path = index.save(args.output)
    print(f"Indexed {len(index.captions)} captions into {path}")
    return path
