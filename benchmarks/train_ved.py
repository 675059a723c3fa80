"""Train the captioner users would otherwise pick, VisionEncoderDecoder (ViT, patch 16 + BERT decoder), through
exactly `centerfocus train`'s Seq2SeqTrainer run: the same flags, data checks, tokenizer (trained on the captions),
collator, optimiser, schedule and saving. Only the model differs; it is built at the width, depth, feed-forward size,
image size and vocabulary the flags give CenterFocus, with random weights (nothing downloaded) and dropout 0 as
CenterFocus has.

    python benchmarks/train_ved.py --dataset chars --output_dir runs/ved --model_size small \\
        --config_overrides encoder_layers=4,decoder_layers=4,image_size=224 --max_steps 600 \\
        --per_device_train_batch_size 32 --learning_rate 5e-4 --warmup_steps 50
    python benchmarks/learning_quality.py --data chars --run ved=runs/ved ...

The loss is plain token cross-entropy: transformers 5.x's VisionEncoderDecoder computes it; 4.57's shifts the
already shifted labels once more (fixed after 4.57; `centerfocus._compat`), so there its `loss_function` is replaced by plain cross-entropy.
"""

import json
import logging
from typing import Optional

import torch.nn.functional as F
from compare_captioners import VED_SHIFTS_LABELS_TWICE  # benchmarks/ runs as scripts: python benchmarks/NAME.py
from transformers import BertConfig, BertLMHeadModel, VisionEncoderDecoderModel, ViTConfig, ViTModel

from centerfocus import CenterFocusConfig
from centerfocus.tools.train import new_model_config, parse_args, run_training


def plain_cross_entropy(logits, labels, vocab_size: int, **kwargs):
    return F.cross_entropy(logits.reshape(-1, vocab_size), labels.reshape(-1), ignore_index=-100)


def build_ved(config: CenterFocusConfig) -> VisionEncoderDecoderModel:
    """VisionEncoderDecoder at `config`'s sizes and special tokens. The attributes `centerfocus train` reads from a
    model config (longest caption, image size, channels) are copied onto its config."""
    sizes = dict(hidden_size=config.hidden_size, num_attention_heads=config.num_attention_heads,
                 intermediate_size=config.intermediate_size, hidden_act=config.hidden_act)
    vit = ViTModel(ViTConfig(num_hidden_layers=config.encoder_layers, image_size=config.image_size, patch_size=16,
                             num_channels=config.num_channels, hidden_dropout_prob=config.dropout,
                             attention_probs_dropout_prob=config.attention_dropout, **sizes), add_pooling_layer=False)
    bert = BertLMHeadModel(BertConfig(vocab_size=config.vocab_size, num_hidden_layers=config.decoder_layers,
                                      max_position_embeddings=config.max_position_embeddings, is_decoder=True,
                                      add_cross_attention=True, hidden_dropout_prob=config.dropout,
                                      attention_probs_dropout_prob=config.attention_dropout,
                                      pad_token_id=config.pad_token_id, **sizes))
    model = VisionEncoderDecoderModel(encoder=vit, decoder=bert)
    for name in ("decoder_start_token_id", "pad_token_id", "eos_token_id", "bos_token_id"):
        setattr(model.config, name, getattr(config, name))
        setattr(model.generation_config, name, getattr(config, name))
    for name in ("max_position_embeddings", "image_size", "num_channels"):
        setattr(model.config, name, getattr(config, name))
    if VED_SHIFTS_LABELS_TWICE:
        model.loss_function = plain_cross_entropy
    return model


def main(argv: Optional[list[str]] = None) -> dict:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    model_args, data_args, training_args = parse_args(argv)
    if model_args.model_name_or_path or model_args.vision_init or model_args.text_init or model_args.lora_r:
        raise ValueError("train_ved.py trains a new VisionEncoderDecoder from scratch: --model_name_or_path, "
                         "--vision_init, --text_init and --lora_r do not apply.")
    # the config centerfocus train would give a new CenterFocus model (sizes, image size, the tokenizer it trains)
    metrics = run_training(model_args, data_args, training_args,
                           model_builder=lambda *args: build_ved(new_model_config(*args)))
    logging.getLogger(__name__).info("Metrics: " + json.dumps(metrics))
    return metrics


if __name__ == "__main__":
    main()
