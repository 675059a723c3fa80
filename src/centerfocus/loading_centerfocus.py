"""Loading CenterFocus folders: the `auto_map` every saved folder carries, and `from_pretrained` errors that name what
is wrong (a damaged weights file, weights whose shapes config.json does not give).

Shipped beside the model files as remote code (the modeling file imports it relatively); it imports nothing but the
standard library, safetensors and transformers' logger.
"""

import contextlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Optional


#: Every Auto class a saved folder answers to with `trust_remote_code=True` (`save_pretrained` records one model class
#: by itself): the one source of the config's `auto_map`, for `save_pretrained` and for the Hub upload alike.
#: AutoModelForVision2Seq is deprecated on 4.57, whose image-to-text pipeline still resolves it.
AUTO_MAP = {
    "AutoConfig": "configuration_centerfocus.CenterFocusConfig",
    "AutoModel": "modeling_centerfocus.CenterFocusModel",
    "AutoModelForVision2Seq": "modeling_centerfocus.CenterFocusForConditionalGeneration",
    "AutoModelForImageTextToText": "modeling_centerfocus.CenterFocusForConditionalGeneration",
}
#: The `auto_map` of a saved processor (`processor_config.json`, `tokenizer_config.json`) and image processor.
PROCESSOR_AUTO_MAP = {"AutoProcessor": "processing_centerfocus.CenterFocusProcessor"}
IMAGE_PROCESSOR_AUTO_MAP = {"AutoImageProcessor": "image_processing_centerfocus.CenterFocusImageProcessor",
                            **PROCESSOR_AUTO_MAP}

DAMAGED_HINT = ("an interrupted copy or download leaves a file cut short: copy or download it again, or save the "
                "model again")


def check_safetensors_file(path) -> None:
    """Raise `OSError` naming `path` when its safetensors header cannot be read (a truncated or corrupted file)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as error:  # SafetensorError, HeaderTooLarge, ...
        raise OSError(f"{path} is damaged ({type(error).__name__}: {error}); {DAMAGED_HINT}.") from None


class _LoadReport(logging.Handler):
    """Keeps the load report transformers 5 logs from `from_pretrained` (ANSI colours removed)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.text = ""

    def emit(self, record):
        message = record.getMessage()
        if "LOAD REPORT" in message:
            self.text = re.sub(r"\x1b\[[0-9;]*m", "", message)

    def __enter__(self):
        logging.getLogger("transformers").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("transformers").removeHandler(self)


# ---- checkpoints of older versions ----

#: Weight names that changed since CenterFocus 0.1 (a regular expression -> its replacement): 0.2 spells the edge
#: stem's colour projection as every other name in the code does (`color`, like `center`).
RENAMED_WEIGHTS = {r"edge_compensation\.colour\.": "edge_compensation.color."}
#: Parameters 0.1 stored as 0-d scalars and 0.2 as 1-element vectors: FSDP2 (`fully_shard`) shards every parameter
#: along its first dimension and refuses scalars.
SCALARS_MADE_VECTORS = re.compile(r"(^|\.)(log_sigma|logit_scale)$")


def _weight_files(pretrained, kwargs: dict) -> list[Path]:
    """The safetensors files of a local folder or of a Hub repository already in the cache (nothing is downloaded
    here); [] when they cannot be found, and loading then goes its usual way."""
    folder = Path(pretrained) / kwargs.get("subfolder", "") if isinstance(pretrained, (str, os.PathLike)) else None
    if folder is None or not folder.is_dir():
        try:
            from transformers.utils import cached_file

            found = cached_file(pretrained, "model.safetensors", subfolder=kwargs.get("subfolder", ""),
                                revision=kwargs.get("revision"), cache_dir=kwargs.get("cache_dir"),
                                local_files_only=True, _raise_exceptions_for_missing_entries=False)
        except Exception:  # not a repository in the cache, or sharded: nothing to upgrade from here
            return []
        return [Path(found)] if found else []
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return sorted({folder / name for name in json.loads(index.read_text())["weight_map"].values()})
    return [folder / "model.safetensors"] if (folder / "model.safetensors").is_file() else []


def _new_name(name: str) -> str:
    for pattern, replacement in RENAMED_WEIGHTS.items():
        name = re.sub(pattern, replacement, name)
    return name


def upgraded_state_dict(pretrained, kwargs: dict) -> Optional[dict]:
    """The weights of a checkpoint saved by an older CenterFocus, in today's names and shapes (`RENAMED_WEIGHTS`,
    `SCALARS_MADE_VECTORS`), for `from_pretrained(..., state_dict=...)`; None when the checkpoint is today's (read from
    the files' headers only) or cannot be found."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    files = _weight_files(pretrained, kwargs)
    try:
        older = False
        for path in files:
            with safe_open(str(path), framework="pt") as handle:
                older = older or any(_new_name(name) != name or (SCALARS_MADE_VECTORS.search(name) and
                                                                 handle.get_slice(name).get_shape() == [])
                                     for name in handle.keys())  # noqa: SIM118 (a safetensors handle, not a dict)
    except Exception:  # a damaged file: loading names it (load_with_clear_errors)
        return None
    if not older:
        return None
    state = {}
    for path in files:
        for name, tensor in load_file(str(path)).items():
            state[_new_name(name)] = tensor.reshape(1) if SCALARS_MADE_VECTORS.search(name) and tensor.ndim == 0 \
                else tensor
    return state


#: `from_pretrained` arguments that are about the weights, not the config (what `load_upgraded` passes on).
_LOADING_ARGUMENTS = frozenset({
    "dtype", "torch_dtype", "device_map", "low_cpu_mem_usage", "output_loading_info", "attn_implementation",
    "ignore_mismatched_sizes", "use_safetensors", "weights_only", "max_memory", "offload_folder", "offload_state_dict",
    "quantization_config", "tp_plan", "use_kernels", "key_mapping", "_from_auto", "_from_pipeline", "adapter_kwargs",
    "variant", "gguf_file", "trust_remote_code", "code_revision", "_commit_hash"})
_HUB_ARGUMENTS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


def load_upgraded(load, model_class, pretrained, state_dict: dict, **kwargs):
    """`load(pretrained, **kwargs)` (a `from_pretrained`) with the weights of `state_dict` instead of the files':
    transformers 5 takes a state dict only without a folder, so the config (and the generation config) are read from
    `pretrained` here and the model is built from them."""
    from transformers import GenerationConfig

    hub = {name: kwargs.pop(name) for name in _HUB_ARGUMENTS if name in kwargs}
    config = kwargs.pop("config", None)
    if config is None or isinstance(config, (str, os.PathLike)):
        overrides = {name: kwargs.pop(name) for name in list(kwargs) if name not in _LOADING_ARGUMENTS}
        config, unused = model_class.config_class.from_pretrained(config or pretrained, return_unused_kwargs=True,
                                                                  **hub, **overrides)
        kwargs.update(unused)
    loaded = load(None, config=config, state_dict=state_dict, **kwargs)
    model = loaded[0] if isinstance(loaded, tuple) else loaded
    model.config._name_or_path = str(pretrained)
    if model.can_generate():
        with contextlib.suppress(OSError):  # without a generation_config.json, the one built from the config stays
            model.generation_config = GenerationConfig.from_pretrained(pretrained, **hub)
    return loaded


def load_with_clear_errors(load, *args, **kwargs):
    """`load(*args, **kwargs)` (a `from_pretrained`), with two errors made readable:

    - a safetensors file that cannot be read: `OSError` naming the damaged file and what to do;
    - config.json that does not match the weights: transformers 5 logs a table and raises "You set
      `ignore_mismatched_sizes` to `False`..."; the `RuntimeError` here carries that table (which weights, which
      shapes), as 4.57's "size mismatch for ..." did.

    transformers gives both only as messages, so they are recognised by their text; anything else is raised as it is.
    """
    with _LoadReport() as report:
        try:
            return load(*args, **kwargs)
        except Exception as error:
            if "safetensor" in type(error).__name__.lower() or "deserializing header" in str(error):
                folder = args[0] if args else kwargs.get("pretrained_model_name_or_path")
                if isinstance(folder, (str, os.PathLike)) and os.path.isdir(folder):
                    for path in sorted(Path(folder).glob("*.safetensors")):
                        check_safetensors_file(path)  # OSError naming the damaged file
                raise OSError(f"Cannot read the weights of {folder} ({type(error).__name__}: {error}); "
                              f"{DAMAGED_HINT}.") from None
            if not isinstance(error, RuntimeError) or "ignore_mismatched_sizes" not in str(error) or not report.text:
                raise
            raise RuntimeError(f"size mismatch: the checkpoint's weights do not have the shapes its config.json "
                               f"gives (pass `ignore_mismatched_sizes=True` to re-initialise them):\n"
                               f"{report.text}") from None
