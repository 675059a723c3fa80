"""`centerfocus train`: fine-tune a CenterFocus captioner with the Hugging Face Seq2SeqTrainer.

Every `Seq2SeqTrainingArguments` flag works (`--bf16`, `--use_cpu`, `--gradient_checkpointing`, `--resume_from_checkpoint`,
`--report_to`, ...), plus the model and data arguments below. Works under `accelerate launch` (DDP).
"""

import copy
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from transformers import (
    AutoTokenizer,
    HfArgumentParser,
    PreTrainedTokenizerBase,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from .._compat import TRAINING_ARGUMENTS_DROPPED
from ..configuration_centerfocus import CenterFocusConfig
from ..image_processing_centerfocus import CenterFocusImageProcessor
from ..modeling_centerfocus import CenterFocusForConditionalGeneration, CenterFocusForImageClassification
from ..processing_centerfocus import CenterFocusProcessor
from .allocator import keep_freed_memory
from .caption_data import CaptionCollator, check_caption_dataset, load_image_dataset
from .metrics import make_compute_metrics
from .tokenizer import train_caption_tokenizer


logger = logging.getLogger(__name__)

# Model sizes for training from scratch. "base" is the design's default model (the seed's two-convolution stem).
# "small" carries what the character benchmarks' ablations kept (docs/benchmarks.md): four conv-BN stages to a 14x14 map
# under centre weighting, an edge stem for the periphery, foveated tokens (76, half the FLOPs of 196), and for real
# handwriting a flattened read-out of the token map added to the centre tokens, which the centre loss trains.
MODEL_PRESETS = {
    "tiny": dict(hidden_size=64, num_attention_heads=4, encoder_layers=1, decoder_layers=2, intermediate_size=128,
                 image_size=64, stem_channels=(16, 32), stem_kernel_sizes=(5, 3), image_tokenizer_grid_size=8,
                 foveated_center_size=4, max_position_embeddings=128),
    "small": dict(hidden_size=256, num_attention_heads=4, encoder_layers=3, decoder_layers=3, intermediate_size=1024,
                  image_size=224, stem_channels=(24, 48, 96, 192), stem_kernel_sizes=(3, 3, 3, 3),
                  stem_strides=(2, 2, 2, 2), center_sigmas=(0.2, 0.3, 0.4, 0.5), stem_norm_type="batch",
                  edge_compensation_type="stem", image_tokenizer_type="foveated", image_tokenizer_grid_size=14,
                  image_summary_type="flatten", center_loss_weight=1.0, max_position_embeddings=256),
    "base": {},
}


def preset(model_size: str) -> dict:
    """A copy of the config fields of `--model_size`; ValueError naming the choices for an unknown one."""
    if model_size not in MODEL_PRESETS:
        raise ValueError(f"--model_size must be one of {sorted(MODEL_PRESETS)}, got {model_size!r}.")
    return dict(MODEL_PRESETS[model_size])


_OVERWRITE_HELP = ("Train into a non-empty --output_dir (its model files are replaced). transformers 5 dropped this "
                   "TrainingArguments flag; the example-script convention it served is kept here on both lines.")


@dataclass
class _KeptTrainingArguments:
    """Flags transformers 5 dropped from `TrainingArguments`, kept on both lines so that a command written for one
    runs on the other: `--overwrite_output_dir`, and `--warmup_ratio` (5.x reads a float `--warmup_steps` below 1
    as that ratio)."""

    overwrite_output_dir: bool = field(default=False, metadata={"help": _OVERWRITE_HELP})
    if "warmup_ratio" in TRAINING_ARGUMENTS_DROPPED:
        warmup_ratio: float = field(default=0.0, metadata={"help": "Linear warmup over this fraction of the steps "
                                                                   "(as --warmup_steps below 1 on transformers 5)."})

        def __post_init__(self):
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")
            if self.warmup_ratio and self.warmup_steps:
                raise ValueError("Pass --warmup_ratio or --warmup_steps, not both.")
            if self.warmup_ratio:
                self.warmup_steps = self.warmup_ratio
            super().__post_init__()


@dataclass
class CenterFocusSeq2SeqTrainingArguments(_KeptTrainingArguments, Seq2SeqTrainingArguments):
    """`Seq2SeqTrainingArguments` with the flags of `_KeptTrainingArguments` (on transformers 4.57 and 5.x alike)."""


@dataclass
class CenterFocusTrainingArguments(_KeptTrainingArguments, TrainingArguments):
    """`TrainingArguments` with the flags of `_KeptTrainingArguments` (on transformers 4.57 and 5.x alike)."""


@dataclass
class ModelArguments:
    """What to train: a saved CenterFocus model or a new one from a preset, its tokenizer and initialisation."""

    model_name_or_path: Optional[str] = field(default=None, metadata={
        "help": "A saved CenterFocus captioner to fine-tune. Default: a new model from --model_size."})
    model_size: str = field(default="small", metadata={
        "help": f"Preset for a new model: {sorted(MODEL_PRESETS)} ('base' is the design's default 768-wide 6+6)."})
    config_overrides: Optional[str] = field(default=None, metadata={
        "help": "Comma-separated CenterFocusConfig overrides for a new model, e.g. "
                "'image_tokenizer_type=foveated,encoder_layers=2,stem_channels=32|64'."})
    tokenizer: Optional[str] = field(default=None, metadata={
        "help": "Tokenizer path or name. Default: the model's, else one trained on the training captions."})
    tokenizer_vocab_size: int = field(default=1000, metadata={"help": "Vocabulary size of a trained tokenizer."})
    vision_init: Optional[str] = field(default=None, metadata={
        "help": "A stage-1 CenterFocusForImageClassification folder whose vision weights initialise the captioner."})
    text_init: Optional[str] = field(default=None, metadata={
        "help": "A BERT-style checkpoint folder whose embeddings and layers initialise the text side."})
    freeze_vision_layers: Optional[int] = field(default=None, metadata={
        "help": "Freeze the first N image-encoder layers (stem stages, channel pruning, edge compensation, image "
                "tokenizer, in that order). Default: 3 with --vision_init (the design's stage 2), else 0."})
    contrastive_loss_weight: Optional[float] = field(default=None, metadata={
        "help": "Weight of the contrastive image-caption alignment loss."})
    center_loss_weight: Optional[float] = field(default=None, metadata={"help": "Weight of the centre-quality loss."})
    word_loss_weight: Optional[float] = field(default=None, metadata={
        "help": "Weight of the word-detection loss (the image tokens name the caption's words)."})
    decoder_type: Optional[str] = field(default=None, metadata={
        "help": "'autoregressive' (default) or 'non_autoregressive' (length prediction + mask-predict refinement)."})
    nar_iterations: Optional[int] = field(default=None, metadata={"help": "Mask-predict passes (non-autoregressive)."})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank; 0 trains the full model."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(default="q_proj,k_proj,v_proj,out_proj,fc1,fc2", metadata={
        "help": "Comma-separated module names (or one regex) that get LoRA adapters."})
    merge_lora: bool = field(default=False, metadata={
        "help": "Merge the adapters into the weights and save a plain model (adapters are saved too)."})
    keep_freed_memory: bool = field(default=True, metadata={
        "help": "Let glibc's malloc reuse freed memory instead of re-faulting fresh pages every step (~10 per cent of a "
                "design-size CPU training step; values unchanged; see centerfocus.tools.allocator)."})


@dataclass
class DataArguments:
    """Where the image-caption pairs come from."""

    dataset: str = field(metadata={
        "help": "An image folder (images + metadata.jsonl/csv with file_name and a caption column, optionally in "
                "train/validation/test sub-folders), or any path or name datasets.load_dataset accepts."})
    dataset_config: Optional[str] = field(default=None, metadata={"help": "Dataset configuration name."})
    image_column: str = field(default="image", metadata={"help": "Column holding the images."})
    caption_column: str = field(default="text", metadata={"help": "Column holding the captions."})
    prompt_column: Optional[str] = field(default=None, metadata={"help": "Optional column with encoder prompts."})
    train_split: str = field(default="train", metadata={"help": "Training split."})
    eval_split: Optional[str] = field(default=None, metadata={
        "help": "Evaluation split. Default: 'validation' or 'test' when present, else a held-out part of train."})
    validation_fraction: float = field(default=0.1, metadata={
        "help": "Fraction of the training split held out when there is no evaluation split."})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Truncate the training set."})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "Truncate the evaluation set."})
    max_target_length: int = field(default=32, metadata={"help": "Longest caption in tokens (incl. eos)."})
    image_size: Optional[int] = field(default=None, metadata={
        "help": "Image size of a new model (overrides the preset and an image_size in --config_overrides)."})
    retrieval_index: Optional[str] = field(default=None, metadata={
        "help": "A caption index (centerfocus index): each image's k nearest training captions (never its own) "
                "become its encoder prompt, for retrieval-augmented captioning."})
    retrieval_k: int = field(default=2, metadata={"help": "Captions retrieved per image."})
    streaming: bool = field(default=False, metadata={
        "help": "Read --dataset as a stream (datasets' streaming=True: local parquet, arrow or webdataset tar shards, "
                "or a Hub data set): nothing is loaded up front, images are decoded in the DataLoader workers "
                "(--dataloader_num_workers), and --max_steps sets the length of the run."})
    shuffle_buffer_size: int = field(default=1000, metadata={
        "help": "With --streaming: examples in the shuffle buffer (datasets' IterableDataset.shuffle)."})
    tokenizer_train_samples: int = field(default=100_000, metadata={
        "help": "With --streaming and no tokenizer: train the tokenizer on the captions of the first N examples."})


# one entry per stem stage: a preset's values only fit its own number of stages
_PER_STAGE_FIELDS = ("stem_kernel_sizes", "stem_strides", "center_sigmas", "stem_residual_blocks")


def apply_overrides(fields: dict, text: Optional[str]) -> dict:
    """`fields` (a preset's config fields) updated with `--config_overrides`. When the overrides give the stem another
    number of stages, the preset's per-stage fields that the overrides do not restate are dropped, so that
    `stem_channels=16|32` on a four-stage preset builds the seed's two-stage stem instead of failing on four strides."""
    overrides = _parse_overrides(text)
    if "stem_channels" in overrides:
        stages = overrides["stem_channels"]
        count = len(stages) if isinstance(stages, (tuple, list)) else 1
        if count != len(fields.get("stem_channels", ())):
            for name in _PER_STAGE_FIELDS:
                if name not in overrides:
                    fields.pop(name, None)
    fields.update(overrides)
    return fields


def _parse_overrides(text: Optional[str]) -> dict:
    """`"a=1,b=x,c=2|3"` -> `{"a": 1, "b": "x", "c": (2, 3)}` (JSON values where they parse)."""
    overrides, fields = {}, CenterFocusConfig().to_dict()
    for item in filter(None, (text or "").split(",")):
        if "=" not in item:
            raise ValueError(f"--config_overrides item {item!r} is not of the form key=value.")
        key, value = (part.strip() for part in item.split("=", 1))
        if key not in fields:
            raise ValueError(f"--config_overrides: {key!r} is not a CenterFocusConfig field.")
        parts = [_json_or_str(v) for v in value.split("|")]
        overrides[key] = tuple(parts) if "|" in value else parts[0]
    return overrides


def _json_or_str(value: str):
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _tokenizer_source(model_args: ModelArguments, resume_from_checkpoint: Optional[str]) -> Optional[str]:
    saved = resume_from_checkpoint if resume_from_checkpoint and os.path.isfile(
        os.path.join(resume_from_checkpoint, "tokenizer_config.json")) else None
    return model_args.tokenizer or model_args.model_name_or_path or model_args.text_init or saved


def needs_trained_tokenizer(model_args: ModelArguments, resume_from_checkpoint: Optional[str] = None) -> bool:
    """Whether `prepare_tokenizer` will train a tokenizer on the captions (no tokenizer is given or saved)."""
    return _tokenizer_source(model_args, resume_from_checkpoint) is None


def streaming_splits(data_args: DataArguments, training_args) -> tuple:
    """`--streaming`: the training stream (images left encoded, shuffled through a seeded buffer, `take`n to
    `--max_train_samples`) and the evaluation stream, if the data has one; ValueError for what a stream cannot do."""
    from .streaming import check_stream_columns, load_streaming_dataset, undecoded_images

    if training_args.max_steps is None or training_args.max_steps <= 0:
        raise ValueError("--streaming needs --max_steps: a stream has no length to count epochs by.")
    if data_args.retrieval_index:
        raise ValueError("--retrieval_index needs the whole training set in memory; it does not work with --streaming.")
    if data_args.shuffle_buffer_size < 1:
        raise ValueError(f"--shuffle_buffer_size must be at least 1, got {data_args.shuffle_buffer_size}.")
    streams = load_streaming_dataset(data_args.dataset, data_args.dataset_config)
    if data_args.train_split not in streams:
        raise ValueError(f"The data set has no split {data_args.train_split!r}; available splits: {sorted(streams)}.")
    eval_split = data_args.eval_split or next((n for n in ("validation", "valid", "val", "test") if n in streams), None)
    if eval_split is not None and eval_split not in streams:
        raise ValueError(f"The data set has no split {eval_split!r}; available splits: {sorted(streams)}.")
    columns = tuple(filter(None, (data_args.image_column, data_args.caption_column, data_args.prompt_column)))
    splits = {}
    for name in filter(None, (data_args.train_split, eval_split)):
        check_stream_columns(streams[name], name, columns)
        splits[name] = undecoded_images(streams[name], data_args.image_column)
    train = splits[data_args.train_split].shuffle(seed=training_args.seed, buffer_size=data_args.shuffle_buffer_size)
    if data_args.max_train_samples:
        train = train.take(data_args.max_train_samples)
    evaluation = splits.get(eval_split)
    if evaluation is not None and data_args.max_eval_samples:
        evaluation = evaluation.take(data_args.max_eval_samples)
    return train, evaluation


def prepare_tokenizer(model_args: ModelArguments, captions: list[str],
                      resume_from_checkpoint: Optional[str] = None) -> PreTrainedTokenizerBase:
    """The tokenizer to train with: given, the model's, BERT's (`--text_init`), the one saved in the checkpoint a run
    resumes from, or one built from the captions."""
    source = _tokenizer_source(model_args, resume_from_checkpoint)
    if source is None:
        logger.info(f"Training a WordPiece tokenizer on {len(captions)} captions.")
        return train_caption_tokenizer(captions, vocab_size=model_args.tokenizer_vocab_size)
    tokenizer = AutoTokenizer.from_pretrained(source)
    # BERT-style tokenizers have [CLS]/[SEP] instead of bos/eos: use them, set once here and saved with the processor
    if tokenizer.bos_token is None and tokenizer.cls_token is not None:
        tokenizer.bos_token = tokenizer.cls_token
    if tokenizer.eos_token is None and tokenizer.sep_token is not None:
        tokenizer.eos_token = tokenizer.sep_token
    for name in ("pad_token", "bos_token", "eos_token"):
        if getattr(tokenizer, name) is None:
            raise ValueError(f"The tokenizer from {source!r} has no {name}; CenterFocus needs pad, bos and eos tokens.")
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    return tokenizer


def build_model(model_args: ModelArguments, data_args: DataArguments,
                tokenizer: PreTrainedTokenizerBase) -> CenterFocusForConditionalGeneration:
    """Load `--model_name_or_path`, or build a new model from the preset (or the stage-1 vision config)."""
    if model_args.model_name_or_path:
        model = CenterFocusForConditionalGeneration.from_pretrained(model_args.model_name_or_path)
        if len(tokenizer) > model.config.vocab_size:
            model.resize_token_embeddings(len(tokenizer))
        return model
    model = CenterFocusForConditionalGeneration(new_model_config(model_args, data_args, tokenizer))
    if model_args.vision_init:
        load_vision_weights(model, model_args.vision_init)
    if model_args.text_init:
        load_text_weights(model, model_args.text_init)
    return model


def new_model_config(model_args: ModelArguments, data_args: DataArguments,
                     tokenizer: PreTrainedTokenizerBase) -> CenterFocusConfig:
    """The config of a new model: the preset, the stage-1 vision and BERT text configs, `--config_overrides`,
    `--image_size`, the loss and decoder flags, then the tokenizer's vocabulary and special tokens."""
    kwargs = preset(model_args.model_size)
    if model_args.vision_init:
        kwargs.update(_vision_config_fields(model_args.vision_init))
    if model_args.text_init:
        kwargs.update(_text_config_fields(model_args.text_init))
    apply_overrides(kwargs, model_args.config_overrides)
    if data_args.image_size:  # the explicit flag wins over the preset and over --config_overrides
        kwargs["image_size"] = data_args.image_size
    for name in ("contrastive_loss_weight", "center_loss_weight", "word_loss_weight", "decoder_type", "nar_iterations"):
        if getattr(model_args, name) is not None:
            kwargs[name] = getattr(model_args, name)
    if kwargs.get("decoder_type") == "non_autoregressive":
        kwargs.setdefault("nar_max_length", data_args.max_target_length)  # every training caption length is a class
    kwargs.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.bos_token_id,
                  max_position_embeddings=max(kwargs.get("max_position_embeddings", 512),
                                              data_args.max_target_length + 1))
    return CenterFocusConfig(**kwargs)


_VISION_FIELDS = ("image_size", "num_channels", "hidden_size", "stem_channels", "stem_kernel_sizes", "stem_strides",
                  "stem_norm_type", "stem_residual_blocks",
                  "center_weighting_type", "center_sigmas", "center_sigma_learnable", "center_weighting_floor",
                  "center_region_size", "channel_pruning_type", "channel_pruning_keep_ratio",
                  "channel_pruning_reduction", "edge_compensation_type", "edge_stem_width_ratio", "edge_stem_residual_blocks",
                  "channel_attention_type",
                  "channel_attention_reduction", "image_tokenizer_type", "image_tokenizer_grid_size",
                  "foveated_center_size", "foveated_periphery_pool", "position_embedding_type", "layer_norm_eps")


def _vision_config_fields(path: str) -> dict:
    config = CenterFocusConfig.from_pretrained(path)
    fields = {name: getattr(config, name) for name in _VISION_FIELDS}
    if fields["hidden_size"] % MODEL_PRESETS["small"]["num_attention_heads"] == 0:
        fields.setdefault("num_attention_heads", MODEL_PRESETS["small"]["num_attention_heads"])
    return fields


def load_vision_weights(model: CenterFocusForConditionalGeneration, path: str) -> int:
    """Copy a stage-1 classifier's `vision_stem.*` / `image_tokenizer.*` weights into the captioner's encoder.
    Returns the number of tensors copied; raises ValueError when a tensor is missing or mismatched."""
    classifier, info = CenterFocusForImageClassification.from_pretrained(path, output_loading_info=True)
    not_stored = [k for k in info["missing_keys"] if k.startswith(("vision_stem.", "image_tokenizer."))]
    if not_stored:
        raise ValueError(f"--vision_init {path!r} is not a stage-1 CenterFocusForImageClassification folder (centerfocus "
                         f"pretrain-vision): it stores no {not_stored[0]!r} ({len(not_stored)} vision weights missing).")
    source = classifier.state_dict()
    target = model.model.encoder.state_dict()
    vision = {k: v for k, v in source.items() if k.startswith(("vision_stem.", "image_tokenizer."))}
    mismatched = [k for k, v in vision.items() if k not in target or target[k].shape != v.shape]
    missing = [k for k in target if k.startswith(("vision_stem.", "image_tokenizer.")) and k not in vision]
    if mismatched or missing:
        raise ValueError(f"--vision_init {path!r} does not match the captioner's vision config: mismatched "
                         f"{mismatched[:5]}, missing {missing[:5]}.")
    model.model.encoder.load_state_dict(vision, strict=False)
    logger.info(f"Loaded {len(vision)} vision tensors from {path}.")
    return len(vision)


def _text_config_fields(path: str) -> dict:
    from transformers import AutoConfig

    bert = AutoConfig.from_pretrained(path)
    return dict(hidden_size=bert.hidden_size, num_attention_heads=bert.num_attention_heads,
                intermediate_size=bert.intermediate_size, hidden_act=bert.hidden_act,
                encoder_layers=bert.num_hidden_layers, decoder_layers=bert.num_hidden_layers,
                max_position_embeddings=bert.max_position_embeddings, layer_norm_eps=bert.layer_norm_eps)


def load_text_weights(model: CenterFocusForConditionalGeneration, path: str) -> int:
    """Initialise the text side from a BERT-style checkpoint: word and position embeddings, and every encoder and
    decoder layer's self-attention, MLP and layer norms from the BERT layer with the same index (cross-attention stays
    random). BERT is post-norm and CenterFocus pre-norm, so this is an initialisation, not an equivalence.
    Returns the number of tensors copied."""
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(path).state_dict()
    prefix = "bert." if any(k.startswith("bert.") for k in bert) else ""
    targets = {"model.shared.weight": "embeddings.word_embeddings.weight"}
    for side in ("encoder", "decoder"):
        targets[f"model.{side}.embed_positions.weight"] = "embeddings.position_embeddings.weight"
        for i in range(getattr(model.config, f"{side}_layers")):
            layer, source = f"model.{side}.layers.{i}.", f"encoder.layer.{i}."
            for ours, theirs in (("self_attn.q_proj", "attention.self.query"), ("self_attn.k_proj", "attention.self.key"),
                                 ("self_attn.v_proj", "attention.self.value"),
                                 ("self_attn.out_proj", "attention.output.dense"),
                                 ("self_attn_layer_norm", "attention.output.LayerNorm"),
                                 ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense"),
                                 ("final_layer_norm", "output.LayerNorm")):
                for kind in ("weight", "bias"):
                    targets[f"{layer}{ours}.{kind}"] = f"{source}{theirs}.{kind}"
    state = model.state_dict()
    copied = 0
    with torch.no_grad():
        for ours, theirs in targets.items():
            tensor = bert.get(prefix + theirs)
            if tensor is None:
                raise ValueError(f"--text_init {path!r} has no tensor {prefix + theirs!r}.")
            if ours.endswith("embed_positions.weight"):
                tensor = tensor[: state[ours].shape[0]]
            if state[ours].shape != tensor.shape:
                raise ValueError(f"--text_init: {prefix + theirs} has shape {tuple(tensor.shape)}, {ours} needs "
                                 f"{tuple(state[ours].shape)}.")
            state[ours].copy_(tensor)
            copied += 1
    logger.info(f"Initialised {copied} text tensors from {path}.")
    return copied


_BATCH_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm)


def _keep_in_eval_mode(module: torch.nn.Module, args) -> None:
    """Forward pre-hook of a frozen batch norm: the Trainer switches the model to training mode every step."""
    module.eval()


def freeze_vision_layers(model: CenterFocusForConditionalGeneration, count: int) -> list[str]:
    """Freeze the first `count` image-encoder layers; returns the names of the frozen parameters. A frozen layer's
    batch norms are frozen too (timm's and detectron2's frozen BatchNorm): they normalise with their stored statistics
    and never update them, so the frozen layers compute in training what they compute at inference and are saved
    unchanged."""
    layers = model.model.encoder.vision_layers()
    if count > len(layers):
        raise ValueError(f"--freeze_vision_layers {count}: the model has only {len(layers)} image-encoder layers.")
    for layer in layers[:count]:
        layer.requires_grad_(False)
        for module in layer.modules():
            if isinstance(module, _BATCH_NORMS):
                module.register_forward_pre_hook(_keep_in_eval_mode)
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    logger.info(f"Froze {count} image-encoder layers ({len(frozen)} tensors).")
    return frozen


def apply_lora(model, model_args: ModelArguments, training_args: Seq2SeqTrainingArguments):
    """Wrap the model with PEFT LoRA adapters (`task_type=None`: PeftModelForSeq2SeqLM assumes text input and its
    keyword-only generate breaks the image-to-text pipeline)."""
    from peft import LoraConfig, get_peft_model

    targets = model_args.lora_target_modules
    target_modules = [t.strip() for t in targets.split(",") if t.strip()] if "," in targets or targets.isidentifier() \
        else targets
    config = LoraConfig(r=model_args.lora_r, lora_alpha=model_args.lora_alpha, lora_dropout=model_args.lora_dropout,
                        target_modules=target_modules, task_type=None)
    if training_args.gradient_checkpointing:
        model.enable_input_require_grads()  # hooks the image tokens too, so encoder adapters get gradients
    peft_model = get_peft_model(model, config)
    trainable, total = peft_model.get_nb_trainable_parameters()
    logger.info(f"LoRA: {trainable:,} trainable of {total:,} parameters.")
    return peft_model


def save_final(trainer: Seq2SeqTrainer, processor: CenterFocusProcessor, output_dir: str,
               model_args: ModelArguments) -> Path:
    """Write the final model + processor to `output_dir` without ever leaving a half-written model there: everything
    is written to a temporary folder first, then each file is moved in with an atomic `os.replace`. If a move fails,
    the files already moved are replaced by the previous ones again (kept as hard links until the save is done)."""
    output = Path(output_dir)
    model = trainer.model
    staging = Path(tempfile.mkdtemp(prefix=".final-", dir=output))
    previous = Path(tempfile.mkdtemp(prefix=".previous-", dir=output))
    restored = True
    try:
        if model_args.lora_r > 0:
            model.save_pretrained(staging / "adapter")  # adapter_model.safetensors + adapter_config.json
            if model_args.merge_lora:
                model = model.merge_and_unload()
            else:
                # a copy without the LoRA layers: get_base_model() still holds them (their keys would not load into
                # a plain CenterFocus model), and unload() in place would take them from the trainer's model
                model = copy.deepcopy(model).unload()
                logger.warning("Saving the base model with adapters in adapter/; pass --merge_lora to save merged "
                               "weights as the main model.")
        model.save_pretrained(staging, safe_serialization=True)
        processor.save_pretrained(staging)
        moved = []  # (target, the previous file's second name or None)
        try:
            for index, path in enumerate(sorted(staging.rglob("*"))):
                target = output / path.relative_to(staging)
                if path.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                kept = previous / str(index) if target.is_file() else None
                if kept is not None:
                    try:
                        os.link(target, kept)
                    except OSError:  # no hard links on this file system
                        shutil.copy2(target, kept)
                moved.append((target, kept))
                os.replace(path, target)
        except BaseException:
            restored = False
            for target, kept in reversed(moved):
                if kept is not None:
                    os.replace(kept, target)
                else:
                    target.unlink(missing_ok=True)
            restored = True
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if restored:
            shutil.rmtree(previous, ignore_errors=True)
        else:
            logger.error(f"Could not restore every previous model file in {output}; they are kept in {previous}.")
    return output


def add_retrieval_prompts(data_args: DataArguments, train_set, eval_set):
    """Add a `retrieved_captions` prompt column from `--retrieval_index` and train with it as the prompt."""
    from .retrieval import CaptionIndex, retrieval_prompts

    index = CaptionIndex.load(data_args.retrieval_index)
    column = "retrieved_captions"
    splits = []
    for split in (train_set, eval_set):
        if split is not None:
            prompts = retrieval_prompts(index, list(split[data_args.image_column]), data_args.retrieval_k,
                                        exclude_identical=True)
            split = split.add_column(column, prompts)
        splits.append(split)
    data_args.prompt_column = column
    return splits[0], splits[1]


def run_training(model_args: ModelArguments, data_args: DataArguments, training_args: Seq2SeqTrainingArguments,
                 callbacks: Optional[list] = None,
                 model: Optional[CenterFocusForConditionalGeneration] = None,
                 model_builder: Optional[Callable] = None) -> dict:
    """Load and check the data, build tokenizer, processor and model, train, evaluate, save. Returns the metrics.
    `callbacks` are extra `TrainerCallback`s; `model` replaces the one `model_args` would build, and
    `model_builder(model_args, data_args, tokenizer)` replaces `build_model` (a model that needs the tokenizer)."""
    check_output_dir(training_args)
    for flag in ("max_train_samples", "max_eval_samples"):
        value = getattr(data_args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag} must be at least 1 (leave it out to use every row), got {value}.")
    if data_args.max_target_length < 2:
        raise ValueError(f"--max_target_length must be at least 2 (a caption token and the end token), got "
                         f"{data_args.max_target_length}.")
    if model_args.model_name_or_path is None:
        preset(model_args.model_size)  # a bad --model_size is refused before the data set is loaded
    set_seed(training_args.seed)  # before the model is built: the same seed must give the same initial weights
    if data_args.streaming:
        train_set, eval_set = streaming_splits(data_args, training_args)
        captions = []
        if needs_trained_tokenizer(model_args, training_args.resume_from_checkpoint):
            rows = train_set.select_columns([data_args.caption_column]).take(data_args.tokenizer_train_samples)
            captions = [row[data_args.caption_column] for row in rows]
    else:
        metadata_columns = tuple(filter(None, (data_args.caption_column, data_args.prompt_column)))
        datasets = load_image_dataset(data_args.dataset, data_args.dataset_config, metadata_columns)
        train_set, eval_set = check_caption_dataset(
            datasets, data_args.image_column, data_args.caption_column, data_args.train_split, data_args.eval_split,
            data_args.validation_fraction, training_args.seed, data_args.prompt_column)
        if data_args.retrieval_index:
            train_set, eval_set = add_retrieval_prompts(data_args, train_set, eval_set)
        if data_args.max_train_samples:
            train_set = train_set.select(range(min(data_args.max_train_samples, len(train_set))))
        if data_args.max_eval_samples and eval_set is not None:
            eval_set = eval_set.select(range(min(data_args.max_eval_samples, len(eval_set))))
        captions = list(train_set[data_args.caption_column])

    resume = training_args.resume_from_checkpoint
    tokenizer = prepare_tokenizer(model_args, captions, resume)
    model = model if model is not None else (model_builder or build_model)(model_args, data_args, tokenizer)
    if training_args.label_smoothing_factor and model.is_non_autoregressive:
        raise ValueError("--label_smoothing_factor applies to autoregressive decoding only: a non-autoregressive "
                         "model computes its own loss from the labels.")
    tokenizer.model_max_length = model.config.max_position_embeddings  # saved: longer prompts truncate, not crash
    image_size = model.config.image_size
    image_processor = (CenterFocusImageProcessor.from_pretrained(model_args.model_name_or_path)
                       if model_args.model_name_or_path else
                       CenterFocusImageProcessor(size={"height": image_size, "width": image_size},
                                                 num_channels=model.config.num_channels))
    processor = CenterFocusProcessor(image_processor, tokenizer)
    freeze = model_args.freeze_vision_layers
    if freeze is None:
        freeze = 3 if model_args.vision_init else 0
    if freeze:
        freeze_vision_layers(model, min(freeze, len(model.model.encoder.vision_layers())))
    model.generation_config.max_length = data_args.max_target_length + 1
    model.generation_config.max_new_tokens = None
    model.generation_config.num_beams = training_args.generation_num_beams or 1
    if model_args.lora_r > 0:
        model = apply_lora(model, model_args, training_args)

    trainer = Seq2SeqTrainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=CaptionCollator(processor, data_args.image_column, data_args.caption_column,
                                      data_args.prompt_column, data_args.max_target_length, model=model),
        processing_class=tokenizer,
        compute_metrics=make_compute_metrics(tokenizer) if training_args.predict_with_generate else None,
        callbacks=callbacks,
    )
    metrics = {}
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        metrics.update(result.metrics)
        if trainer.is_world_process_zero():
            save_final(trainer, processor, training_args.output_dir, model_args)
    if training_args.do_eval and eval_set is not None:
        metrics.update(trainer.evaluate(max_length=data_args.max_target_length + 1))
    if trainer.is_world_process_zero():
        trainer.save_metrics("all", metrics)
    return metrics


def with_default_flags(argv: list[str], defaults: dict[str, str]) -> list[str]:
    """`argv` plus `defaults` for the flags it does not set. HfArgumentParser takes `--output_dir` and `--output-dir`
    alike, so either spelling counts as set (a default appended after a hyphenated flag would silently win)."""
    given = {"--" + a[2:].split("=")[0].replace("-", "_") for a in argv if a.startswith("--")}
    return argv + [item for flag, value in defaults.items() if flag not in given for item in (flag, value)]


def check_output_dir(training_args: Seq2SeqTrainingArguments) -> None:
    """transformers' example-script convention, before any work: a run never trains into a folder that already holds
    files unless `--overwrite_output_dir` or `--resume_from_checkpoint` asks for it. `--resume_from_checkpoint true`
    is resolved to the folder's last checkpoint, and an error when there is none (instead of a fresh start)."""
    output = Path(training_args.output_dir)
    resume = training_args.resume_from_checkpoint
    if resume in ("true", "True", True):
        resume = get_last_checkpoint(str(output)) if output.is_dir() else None
        if resume is None:
            raise ValueError(f"--resume_from_checkpoint true: there is no checkpoint-* folder in {output} to resume.")
    elif resume is not None and not Path(resume).is_dir():
        raise ValueError(f"--resume_from_checkpoint {resume}: no such checkpoint folder.")
    if resume is None and not training_args.overwrite_output_dir and output.is_dir() and any(output.iterdir()):
        raise ValueError(f"Output directory {output} already exists and is not empty. Pass --overwrite_output_dir to "
                         "train into it anyway (its model files are replaced), --resume_from_checkpoint to continue "
                         "its run, or another --output_dir.")
    training_args.resume_from_checkpoint = resume


def parse_args(argv: Optional[list[str]] = None) -> tuple[ModelArguments, DataArguments, Seq2SeqTrainingArguments]:
    """Parse command-line arguments with transformers' HfArgumentParser, applying CenterFocus defaults for flags the
    user did not pass (TensorBoard logging, generation-based evaluation, raw columns kept for the collator)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = with_default_flags(argv, {
        "--output_dir": "centerfocus-output", "--report_to": "tensorboard", "--predict_with_generate": "true",
        "--remove_unused_columns": "false", "--do_train": "true", "--do_eval": "true", "--eval_strategy": "epoch",
        "--save_strategy": "epoch", "--save_total_limit": "2", "--logging_steps": "10",
        "--dataloader_num_workers": "0"})
    parser = HfArgumentParser((ModelArguments, DataArguments, CenterFocusSeq2SeqTrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    if training_args.gradient_checkpointing and training_args.gradient_checkpointing_kwargs is None:
        training_args.gradient_checkpointing_kwargs = {"use_reentrant": False}
    if training_args.remove_unused_columns:
        raise ValueError("--remove_unused_columns must stay false: the collator reads the raw image/caption columns.")
    if training_args.fsdp and training_args.device.type == "cpu":
        raise ValueError("--fsdp needs GPUs (or another accelerator): accelerate applies FSDP only there, and on CPU "
                         "the run would silently be plain data parallelism. Drop --fsdp to train with DDP on CPU "
                         "(torchrun / accelerate launch; README, 'Beyond one machine').")
    return model_args, data_args, training_args


def main(argv: Optional[list[str]] = None) -> dict:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    model_args, data_args, training_args = parse_args(argv)
    if model_args.keep_freed_memory:
        keep_freed_memory()
    metrics = run_training(model_args, data_args, training_args)
    logger.info("Metrics: " + json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}))
    return metrics


if __name__ == "__main__":
    main()
