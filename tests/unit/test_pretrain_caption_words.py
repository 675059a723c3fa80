"""`pretrain-vision --caption_words`: stage 1 whose labels are the words of the captions (no class labels)."""
import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from centerfocus import CenterFocusConfig, CenterFocusForImageClassification, CenterFocusImageProcessor
from centerfocus.tools.pretrain import ClassificationCollator, caption_words, word_vocabulary

from ..conftest import tiny_config_kwargs


def test_vocabulary_keeps_words_enough_captions_use_and_not_every_one():
    captions = ["A red 7 in the centre", "a blue 7 in the centre with a small red 2 at the left",
                "a green 3 in the centre", "a green 3 in the centre, with a small red 2 at the top"]
    assert caption_words("A red 7, at the Top-left") == ["a", "red", "7", "at", "the", "top", "left"]
    # "a", "in", "the", "centre" are in every caption; each remaining word counts once per caption it is in
    assert word_vocabulary(captions, 2) == ["2", "3", "7", "at", "green", "red", "small", "with"]
    assert word_vocabulary(captions, 1) == ["2", "3", "7", "at", "blue", "green", "left", "red", "small", "top",
                                            "with"]
    with pytest.raises(ValueError, match="min_word_count"):
        word_vocabulary(captions, 0)
    with pytest.raises(ValueError, match="No caption word"):
        word_vocabulary(captions, 5)
    with pytest.raises(ValueError, match="caption"):
        word_vocabulary(["a red 7", None], 1)


def test_collator_turns_captions_into_multi_hot_labels():
    processor = CenterFocusImageProcessor(size={"height": 32, "width": 32})
    words = ["2", "7", "red", "small"]
    collator = ClassificationCollator(processor, "image", "text", words=words)
    image = Image.new("RGB", (40, 40), (90, 10, 10))
    batch = collator([{"image": image, "text": "a red 7 in the centre"},
                      {"image": image, "text": "a blue 2 in the centre with a small red 2 at the top"},
                      {"image": image, "text": "nothing known"}])
    assert batch["pixel_values"].shape == (3, 3, 32, 32)
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].tolist() == [[0, 1, 1, 0], [1, 0, 1, 1], [0, 0, 0, 0]]


def test_multi_hot_labels_train_both_heads_with_binary_cross_entropy():
    """With `problem_type="multi_label_classification"`, the loss is the centre head's binary cross-entropy plus the
    edge head's on the pooled edge-stem features, each recomputed here in float64 from the modules."""
    config = CenterFocusConfig(**tiny_config_kwargs(stem_norm_type="batch", edge_compensation_type="stem",
                                                    num_labels=4, problem_type="multi_label_classification"))
    torch.manual_seed(0)
    model = CenterFocusForImageClassification(config).eval()
    generator = torch.Generator().manual_seed(1)
    pixels = torch.rand(3, 3, config.image_size, config.image_size, generator=generator)
    small = torch.rand(3, 3, 16, 16, generator=generator)
    labels = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1]])
    with torch.no_grad():
        plain = model(pixel_values=pixels, labels=labels)
        both = model(pixel_values=pixels, labels=labels, edge_pixel_values=small)
        centre = F.binary_cross_entropy_with_logits(plain.logits.double(), labels.double())
        features = model.vision_stem.edge_compensation.layers(small).double().mean(dim=(2, 3))
        head = model.edge_classifier
        edge = F.binary_cross_entropy_with_logits(features @ head.weight.double().t() + head.bias.double(),
                                                  labels.double())
    # float32 layers against float64 recomputation: rounding of O(1) logits, ~1e-6
    assert plain.loss.item() == pytest.approx(centre.item(), abs=1e-5)
    assert (both.loss - plain.loss).item() == pytest.approx(edge.item(), abs=1e-4)


def test_pretrain_vision_learns_the_words_of_the_captions(tmp_path):
    """End to end on the handwriting benchmark: the saved classifier's labels are the caption words, it is
    multi-label, it evaluates with word F1, and `centerfocus train --vision_init` reads it."""
    from centerfocus.tools import pretrain, train
    from centerfocus.tools.handwriting import generate_handwriting_dataset

    data = generate_handwriting_dataset(tmp_path / "hw", num_train=40, num_test=8, image_size=64, seed=1)
    captions = [json.loads(line)["text"] for line in (data / "train" / "metadata.jsonl").read_text().splitlines()]
    vision = tmp_path / "vision"
    metrics = pretrain.main(["--dataset", str(data), "--caption_words", "--min_word_count", "3",
                             "--output_dir", str(vision), "--model_size", "tiny", "--max_steps", "2",
                             "--config_overrides", "edge_compensation_type=stem,stem_norm_type=batch",
                             "--edge_object_scale", "0.3", "--per_device_train_batch_size", "8", "--use_cpu", "true",
                             "--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no"])
    config = CenterFocusForImageClassification.from_pretrained(vision).config
    assert config.problem_type == "multi_label_classification"
    assert [config.id2label[i] for i in range(config.num_labels)] == word_vocabulary(captions, 3)
    assert 0.0 <= metrics["eval_word_f1"] <= 1.0 and 0.0 <= metrics["eval_exact_match"] <= 1.0
    model_args, data_args, _ = train.parse_args(["--dataset", str(data), "--vision_init", str(vision),
                                                 "--model_size", "tiny", "--config_overrides",
                                                 "edge_compensation_type=stem,stem_norm_type=batch"])
    tokenizer = train.prepare_tokenizer(model_args, captions)
    stage1 = CenterFocusForImageClassification.from_pretrained(vision).state_dict()
    encoder = train.build_model(model_args, data_args, tokenizer).model.encoder.state_dict()
    assert torch.equal(encoder["vision_stem.edge_compensation.layers.0.weight"],
                       stage1["vision_stem.edge_compensation.layers.0.weight"])
    with pytest.raises(ValueError, match="no column 'words'"):
        pretrain.main(["--dataset", str(data), "--caption_words", "--caption_column", "words", "--output_dir",
                       str(tmp_path / "v2"), "--model_size", "tiny", "--max_steps", "1", "--use_cpu", "true",
                       "--report_to", "none", "--save_strategy", "no"])
