"""Build a caption tokenizer offline with the `tokenizers` library."""

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast


SPECIAL_TOKENS = {"pad_token": "[PAD]", "bos_token": "[BOS]", "eos_token": "[EOS]", "unk_token": "[UNK]"}


def train_caption_tokenizer(captions: Iterable[str], vocab_size: int = 2000,
                            min_frequency: int = 1) -> PreTrainedTokenizerFast:
    """Train a lower-casing WordPiece tokenizer on `captions`.

    Special tokens get the ids CenterFocusConfig defaults to: [PAD]=0, [BOS]=1 (also the decoder start), [EOS]=2,
    [UNK]=3. Encoding with special tokens (prompts) gives `[BOS] ... [EOS]`.
    """
    captions = list(captions)
    if not captions:
        raise ValueError("Cannot train a tokenizer on an empty list of captions.")
    tokenizer = Tokenizer(models.WordPiece(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=list(SPECIAL_TOKENS.values()))
    tokenizer.train_from_iterator(captions, trainer=trainer)
    bos, eos = SPECIAL_TOKENS["bos_token"], SPECIAL_TOKENS["eos_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} $B {eos}",
        special_tokens=[(bos, tokenizer.token_to_id(bos)), (eos, tokenizer.token_to_id(eos))])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_input_names=["input_ids", "attention_mask"],
                                   clean_up_tokenization_spaces=True, **SPECIAL_TOKENS)
