"""Build a caption tokenizer offline with the `tokenizers` library."""

from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast


SPECIAL_TOKENS = {"pad_token": "[PAD]", "bos_token": "[BOS]", "eos_token": "[EOS]", "unk_token": "[UNK]"}


def train_caption_tokenizer(captions: Iterable[str], vocab_size: int = 2000,
                            min_frequency: int = 1) -> PreTrainedTokenizerFast:
    """Build a lower-casing WordPiece tokenizer from `captions`, deterministically.

    The vocabulary is the special tokens, every character seen (as a word start and as a `##` continuation, so any
    word made of seen characters can be spelled), then whole words by falling frequency (ties broken
    alphabetically) up to `vocab_size`. `tokenizers`' own WordPiece trainer breaks frequency ties differently in every
    process, which would give a resumed training run different token ids than the checkpoint it resumes from.

    Special tokens get the ids CenterFocusConfig defaults to: [PAD]=0, [BOS]=1 (also the decoder start), [EOS]=2,
    [UNK]=3. Encoding with special tokens (prompts) gives `[BOS] ... [EOS]`.
    """
    normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: Counter = Counter()
    for caption in captions:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(caption)))
    if not counts:
        raise ValueError("Cannot train a tokenizer on an empty list of captions.")
    characters = sorted({c for word in counts for c in word})
    vocab = list(SPECIAL_TOKENS.values()) + characters + [f"##{c}" for c in characters]
    known = set(vocab)
    for word, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if len(vocab) >= vocab_size or count < min_frequency:
            break
        if word not in known:
            vocab.append(word)
            known.add(word)
    tokenizer = Tokenizer(models.WordPiece({token: i for i, token in enumerate(vocab)},
                                           unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece()
    bos, eos = SPECIAL_TOKENS["bos_token"], SPECIAL_TOKENS["eos_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} $B {eos}",
        special_tokens=[(bos, tokenizer.token_to_id(bos)), (eos, tokenizer.token_to_id(eos))])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_input_names=["input_ids", "attention_mask"],
                                   clean_up_tokenization_spaces=True, **SPECIAL_TOKENS)
