"""Publish a trained CenterFocus folder as a self-contained Hugging Face Hub repository.

The repository loads with `trust_remote_code=True` where this package is not installed: it carries the model code
(the four `*_centerfocus.py` files), safetensors weights, the processor files with their `auto_map`, the generation
config and a model card. The steps, each usable on its own:

1. `assemble_repo_folder` refuses unsafe or incomplete folders (pickle files, missing code or weights, unreadable
   safetensors, a non-CenterFocus config) and copies an allow-list of files into a fresh folder, adding missing
   `auto_map` entries and writing the model card (`hub_card.build_model_card`).
2. `verify_repo_folder` checks the card's Hub metadata, then runs `hub_verify.py`, by file path, in a separate,
   time-limited Python process in which `centerfocus` cannot be imported and the Hub is offline (Auto classes,
   `pipeline`, and the model card's usage snippets, which must give the same caption as `generate`).
3. `upload_folder_to_hub` creates the repository (and branch) and uploads every file in one commit.

`publish` runs the three in order and never uploads a folder that failed a check. The Hub token comes from
huggingface_hub's usual sources (`HF_TOKEN`, `huggingface-cli login`); it is never taken as an argument, logged,
written, or passed to the verification process.
"""

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import huggingface_hub

from .._compat import CAPTIONING_TASKS, auto_model_for_vision2seq
from ..loading_centerfocus import AUTO_MAP, IMAGE_PROCESSOR_AUTO_MAP, PROCESSOR_AUTO_MAP
from .hub_card import CODE_FILES, build_model_card, localize_snippet, usage_snippets
from .hub_verify import IMPORT_BLOCKER as IMPORT_BLOCKER  # tests/fresh_process.py runs its code with it


logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: `auto_map` entries of config.json (missing keys are added), of the processor files and the image processor's.
CONFIG_AUTO_MAP = AUTO_MAP

#: Extensions of pickle-based weight/state files. They are never loaded and never uploaded.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")

#: Top-level training-state folders written by the Trainer (`checkpoint-<step>/`, TensorBoard `runs/`). They are
#: never uploaded or read, so the optimizer/scheduler/RNG pickles they always hold do not make a folder unsafe.
TRAINING_STATE_DIR = re.compile(r"^(checkpoint-\d+|runs)$")

#: Top-level pickles the Trainer itself writes next to the model (`Trainer.save_model`: its arguments). Never read or
#: uploaded, so they do not make a folder unsafe either.
TRAINING_STATE_FILES = ("training_args.bin",)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
ONNX_SUFFIXES = (".onnx", ".onnx_data", ".onnx.data", ".json", ".py", ".txt")

#: Optional file in the model folder recording what the model was trained on: `{"datasets": ["owner/name"]}`.
TRAINING_INFO_FILE = "centerfocus_training.json"

#: The verification program, run by file path in a process without the centerfocus package.
VERIFY_PROGRAM = Path(__file__).resolve().with_name("hub_verify.py")

_NOT_METRICS = ("runtime", "samples_per_second", "steps_per_second", "samples", "epoch")

_TOKEN_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")


class HubUploadError(RuntimeError):
    """A folder was refused: it is unsafe, incomplete, or does not load. Nothing was uploaded."""


class HubClientError(RuntimeError):
    """The Hub client failed while creating the repository or branch, or committing (after all checks passed)."""


@dataclass
class PublishResult:
    """What `publish` did.

    Attributes:
        folder: The assembled folder (the dry-run folder; for uploads a temporary folder that no longer exists).
        files: The repository files, relative POSIX paths, sorted.
        caption: The caption the verification process generated for its test image.
        commit_url: The Hub commit URL, or None for a dry run.
    """

    folder: Path
    files: list[str]
    caption: str
    commit_url: Optional[str] = None


# ----------------------------------------------------------------------------------------------------------------
# Checks on the source folder
# ----------------------------------------------------------------------------------------------------------------


def code_files(folder: PathLike) -> list[str]:
    """`CODE_FILES` and every module they import relatively, recursively, found in `folder` as transformers'
    remote-code loader finds them (`get_relative_imports`): a folder saved by an earlier version names only what its
    own code imports. Modules that are missing from `folder` are listed too, for the caller to refuse."""
    from transformers.dynamic_module_utils import get_relative_imports

    names, queue = [], list(CODE_FILES)
    while queue:
        name = queue.pop(0)
        if name in names:
            continue
        names.append(name)
        if (Path(folder) / name).is_file():
            queue += [f"{module}.py" for module in get_relative_imports(Path(folder) / name)]
    return names


def find_pickle_files(folder: PathLike) -> tuple[list[str], list[str]]:
    """Find pickle-based files (`*.bin`, `*.pt`, `*.pth`, `*.pkl`, `*.pickle`, `*.ckpt`) anywhere under `folder`.

    Args:
        folder: The folder to scan (recursively; symbolic links to folders are not followed).

    Returns:
        `(refused, ignored)`: relative paths outside, and inside, the Trainer's training state (the top-level
        `checkpoint-<step>/` and `runs/` folders and `training_args.bin`), which is never uploaded.
    """
    root = Path(folder)
    refused, ignored = [], []
    for directory, _, names in os.walk(root):
        for name in names:
            if name.lower().endswith(PICKLE_SUFFIXES):
                relative = (Path(directory) / name).relative_to(root)
                in_state = (len(relative.parts) > 1 and TRAINING_STATE_DIR.match(relative.parts[0])) or (
                    relative.as_posix() in TRAINING_STATE_FILES)
                (ignored if in_state else refused).append(relative.as_posix())
    return sorted(refused), sorted(ignored)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HubUploadError(f"{path.name} is not readable JSON: {error}") from error
    if not isinstance(data, dict):
        raise HubUploadError(f"{path.name} must hold a JSON object, got {type(data).__name__}.")
    return data


def _weight_files(folder: Path) -> list[str]:
    """The safetensors weight files of `folder` (one file, or an index and its shards); refuses when absent."""
    if (folder / "model.safetensors").is_file():
        return ["model.safetensors"]
    index_path = folder / "model.safetensors.index.json"
    if index_path.is_file():
        shards = sorted(set(_read_json(index_path).get("weight_map", {}).values()))
        if not shards:
            raise HubUploadError("model.safetensors.index.json has an empty weight_map.")
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise HubUploadError(f"model.safetensors.index.json lists shards that are missing: {missing}.")
        return ["model.safetensors.index.json", *shards]
    raise HubUploadError(f"{folder} holds no safetensors weights (model.safetensors or model.safetensors.index.json). "
                         "Save the model with save_pretrained(..., safe_serialization=True).")


def inspect_safetensors(paths: Iterable[PathLike]) -> dict[str, Any]:
    """Read the headers of safetensors files (no tensor data, no pickle) to check they are readable.

    Args:
        paths: The weight files.

    Returns:
        `{"num_parameters": int, "dtypes": sorted list of dtype names, "num_tensors": int}`.

    Raises:
        HubUploadError: If a file is not a readable safetensors file.
    """
    from safetensors import safe_open

    num_parameters, num_tensors, dtypes = 0, 0, set()
    for path in paths:
        path = Path(path)
        try:
            with safe_open(str(path), framework="numpy") as handle:
                for name in handle.keys():  # noqa: SIM118 (safe_open handles are not iterable)
                    tensor = handle.get_slice(name)
                    count = 1
                    for dim in tensor.get_shape():
                        count *= dim
                    num_parameters += count
                    num_tensors += 1
                    dtypes.add(str(tensor.get_dtype()))
        except Exception as error:
            raise HubUploadError(f"{path.name} is not a readable safetensors file ({type(error).__name__}: {error}); "
                                 "it may be corrupted or truncated.") from error
    if not num_tensors:
        raise HubUploadError("The safetensors weights hold no tensors.")
    return {"num_parameters": num_parameters, "dtypes": sorted(dtypes), "num_tensors": num_tensors}


def read_eval_metrics(model_dir: PathLike) -> dict[str, float]:
    """The evaluation metrics a `centerfocus train` run recorded.

    Reads the `eval_*` keys of `all_results.json` (or `eval_results.json`); without those, the last evaluation entry
    of `trainer_state.json` (in the folder or its latest `checkpoint-<step>/`). Runtime/throughput keys are dropped.

    Args:
        model_dir: The trained folder.

    Returns:
        `{"eval_bleu4": 0.41, ...}`, empty when nothing was recorded.
    """
    folder = Path(model_dir)

    def pick(entry: dict) -> dict[str, float]:
        return {k: float(v) for k, v in entry.items() if k.startswith("eval_") and isinstance(v, (int, float))
                and not isinstance(v, bool) and not k.endswith(_NOT_METRICS)}

    for name in ("all_results.json", "eval_results.json"):
        if (folder / name).is_file():
            try:
                metrics = pick(_read_json(folder / name))
            except HubUploadError as error:
                logger.warning(f"Ignoring {name}: {error}")
                continue
            if metrics:
                return metrics
    checkpoints = sorted((p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                         key=lambda p: int(p.name.split("-")[-1]))
    for state_path in [folder / "trainer_state.json", *[c / "trainer_state.json" for c in reversed(checkpoints)]]:
        if state_path.is_file():
            try:
                history = _read_json(state_path).get("log_history", [])
            except HubUploadError:
                continue
            for entry in reversed(history):
                metrics = pick(entry) if isinstance(entry, dict) else {}
                if metrics:
                    return metrics
    return {}


def read_datasets(model_dir: PathLike, datasets: Optional[Iterable[str]] = None) -> list[str]:
    """The Hub dataset ids the model was trained on: `datasets` if given, else `centerfocus_training.json`'s
    `"datasets"` list when the folder has one. Local paths are dropped (they mean nothing on the Hub and would leak
    the machine's layout).

    Args:
        model_dir: The trained folder.
        datasets: Dataset ids given on the command line.

    Returns:
        The dataset ids, possibly empty.
    """
    names = list(datasets or [])
    info_path = Path(model_dir) / TRAINING_INFO_FILE
    if not names and info_path.is_file():
        recorded = _read_json(info_path).get("datasets", [])
        names = [recorded] if isinstance(recorded, str) else [n for n in recorded if isinstance(n, str)]
    kept = []
    for name in names:
        name = name.strip()
        if not name or name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1 or ":" in name:
            logger.warning(f"Leaving dataset {name!r} out of the model card: not a Hub dataset id.")
        elif name not in kept:
            kept.append(name)
    return kept


def _tokenizer_lowercases(folder: Path) -> bool:
    path = folder / "tokenizer.json"
    if not path.is_file():
        return False
    try:
        normalizer = json.loads(path.read_text(encoding="utf-8")).get("normalizer") or {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    text = json.dumps(normalizer)
    return '"Lowercase"' in text or ('"BertNormalizer"' in text and '"lowercase": true' in text)


# ----------------------------------------------------------------------------------------------------------------
# Assembling
# ----------------------------------------------------------------------------------------------------------------


def _validate_repo_id(repo_id: str) -> None:
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id) or ".." in repo_id or len(repo_id) > 96:
        raise HubUploadError(f"--repo-id must look like OWNER/NAME (letters, digits, '-', '_', '.'), got {repo_id!r}.")


def _validate_revision(revision: Optional[str]) -> None:
    if revision is not None and (not _REVISION.match(revision) or ".." in revision or revision.endswith(("/", "."))):
        raise HubUploadError(f"--revision must be a branch name, got {revision!r}.")


def _merge_auto_map(data: dict, entries: dict[str, str]) -> bool:
    auto_map = data.setdefault("auto_map", {})
    if not isinstance(auto_map, dict):
        raise HubUploadError(f"auto_map must be a JSON object, got {auto_map!r}.")
    added = {k: v for k, v in entries.items() if k not in auto_map}
    auto_map.update(added)
    return bool(added)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _copy_with_auto_map(source: Path, target: Path, entries: dict[str, str]) -> None:
    data = _read_json(source)
    if _merge_auto_map(data, entries):
        logger.info(f"Added missing auto_map entries to {source.name}.")
        _write_json(target, data)
    else:
        shutil.copyfile(source, target)


def _package_code_dir() -> Path:
    return Path(__file__).resolve().parent.parent


def assemble_repo_folder(model_dir: PathLike, out_dir: PathLike, repo_id: str, revision: Optional[str] = None,
                         license: str = "apache-2.0", datasets: Optional[Iterable[str]] = None,
                         refresh_code: bool = False) -> list[str]:
    """Copy what a Hub repository needs from a trained folder into `out_dir` and write its model card.

    Copied: config.json (with every `auto_map` entry of `CONFIG_AUTO_MAP`, missing ones added), the safetensors
    weights, the four code files, preprocessor_config.json and processor_config.json (with their `auto_map`;
    processor_config.json is written when absent), the tokenizer files, generation_config.json, and `onnx/` when
    present (`*.onnx`, external data, `*.json`, `*.py`, `*.txt`). Nothing else: no checkpoints, TensorBoard runs,
    optimizer or trainer state, metrics files, adapters or an existing README.md.

    Args:
        model_dir: The trained folder (`centerfocus train --output_dir`, or any `save_pretrained` folder holding
            model and processor).
        out_dir: Where the repository folder goes; must not exist or be empty.
        repo_id: `owner/name`, used in the model card.
        revision: The branch the snippets pin (default "main").
        license: Hub license id for the card.
        datasets: Hub dataset ids for the card (default: `centerfocus_training.json` when present).
        refresh_code: Copy this package's current code files instead of the folder's own copies (which must
            otherwise all be present).

    Returns:
        The files written, relative POSIX paths, sorted.

    Raises:
        HubUploadError: If the folder holds a pickle file outside the Trainer's training-state folders, lacks a code
            file, weights, config, processor, tokenizer or generation config, has unreadable weights, or is not a
            CenterFocus model; or if `out_dir` is not empty.
    """
    source, target = Path(model_dir), Path(out_dir)
    _validate_repo_id(repo_id)
    _validate_revision(revision)
    if not source.is_dir():
        raise HubUploadError(f"{source} is not a folder.")
    refused, ignored = find_pickle_files(source)
    if refused:
        raise HubUploadError(
            f"Refusing {source}: it holds pickle file(s) {', '.join(refused)}. Pickles can run arbitrary code when "
            "loaded; CenterFocus repositories ship safetensors weights only. Delete or move these files (re-save "
            "the model with save_pretrained(..., safe_serialization=True)).")
    if ignored:
        logger.info(f"Ignoring {len(ignored)} pickle file(s) of the Trainer's training state (never uploaded).")

    if not (source / "config.json").is_file():
        raise HubUploadError(f"{source} has no config.json.")
    config = _read_json(source / "config.json")
    if config.get("model_type") != "centerfocus":
        raise HubUploadError(f"config.json has model_type {config.get('model_type')!r}, expected 'centerfocus'.")
    missing_code = [name for name in code_files(source) if not (source / name).is_file()]
    if missing_code and not refresh_code:
        raise HubUploadError(
            f"Refusing {source}: code file(s) {', '.join(missing_code)} missing; the repository would not load with "
            "trust_remote_code=True. Re-save the model with the centerfocus package imported, or pass --refresh-code "
            "to copy the installed package's code files.")
    weights = _weight_files(source)
    weight_info = inspect_safetensors(source / name for name in weights if name.endswith(".safetensors"))
    for required in ("generation_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        if not (source / required).is_file():
            raise HubUploadError(f"Refusing {source}: {required} is missing (save the processor and the model "
                                 "with save_pretrained into the same folder).")
    tokenizer_files = [name for name in TOKENIZER_FILES if (source / name).is_file()]
    if not set(tokenizer_files) - {"tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"}:
        raise HubUploadError(f"Refusing {source}: no tokenizer vocabulary (tokenizer.json, vocab.txt, ...).")

    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise HubUploadError(f"{target} exists and is not an empty folder; choose a new output folder.")
    target.mkdir(parents=True, exist_ok=True)

    written: list[str] = []

    def copy(name: str, origin: Optional[Path] = None) -> None:
        shutil.copyfile(origin or source / name, target / name)
        written.append(name)

    _copy_with_auto_map(source / "config.json", target / "config.json", CONFIG_AUTO_MAP)
    written.append("config.json")
    for name in weights:
        copy(name)
    code_origin = _package_code_dir() if refresh_code else source
    if refresh_code:
        logger.info(f"Copying the model code from the installed package ({code_origin}).")
    shipped_code = code_files(code_origin)
    for name in shipped_code:
        copy(name, code_origin / name)
    _copy_with_auto_map(source / "preprocessor_config.json", target / "preprocessor_config.json",
                        IMAGE_PROCESSOR_AUTO_MAP)
    written.append("preprocessor_config.json")
    if (source / "processor_config.json").is_file():
        _copy_with_auto_map(source / "processor_config.json", target / "processor_config.json", PROCESSOR_AUTO_MAP)
    else:
        _write_json(target / "processor_config.json",
                    {"auto_map": dict(PROCESSOR_AUTO_MAP), "processor_class": "CenterFocusProcessor"})
    written.append("processor_config.json")
    for name in tokenizer_files:
        if name == "tokenizer_config.json":
            _copy_with_auto_map(source / name, target / name, PROCESSOR_AUTO_MAP)
            written.append(name)
        else:
            copy(name)
    copy("generation_config.json")

    has_onnx = (source / "onnx").is_dir()
    if has_onnx:
        for path in sorted((source / "onnx").rglob("*")):
            relative = path.relative_to(source)
            if path.is_file() and path.name.lower().endswith(ONNX_SUFFIXES) and not any(
                    part.startswith(".") for part in relative.parts):
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target / relative)
                written.append(relative.as_posix())

    card = build_model_card(
        config, repo_id, revision=revision, license=license, metrics=read_eval_metrics(source),
        datasets=read_datasets(source, datasets), num_parameters=weight_info["num_parameters"],
        lowercase_captions=_tokenizer_lowercases(source), has_onnx=has_onnx,
        max_length=_read_json(source / "generation_config.json").get("max_length"), code_files=shipped_code)
    (target / "README.md").write_text(card, encoding="utf-8")
    written.append("README.md")
    skipped = sorted(p.name for p in source.iterdir() if p.name not in {Path(w).parts[0] for w in written})
    if skipped:
        logger.info(f"Not uploaded: {', '.join(skipped)}")
    return sorted(written)


# ----------------------------------------------------------------------------------------------------------------
# Verification
# ----------------------------------------------------------------------------------------------------------------


def _clean_environment(modules_cache: str) -> dict[str, str]:
    """The verification process's environment: offline, its own remote-code module cache, no token."""
    env = {k: v for k, v in os.environ.items() if k not in (*_TOKEN_ENV_VARS, "HF_TOKEN_PATH")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_MODULES_CACHE=modules_cache,
               TOKENIZERS_PARALLELISM="false")
    return env


def _current_tokens() -> list[str]:
    tokens = [os.environ.get(name) for name in _TOKEN_ENV_VARS]
    with contextlib.suppress(Exception):  # a broken token file is not our concern here
        tokens.append(huggingface_hub.get_token())
    return [t for t in dict.fromkeys(tokens) if t and len(t) >= 8]


def redact(text: str) -> str:
    """Replace any Hugging Face token value of this environment in `text` by `***`."""
    for token in _current_tokens():
        text = text.replace(token, "***")
    return text


def check_no_token(folder: PathLike) -> None:
    """Refuse a folder in which a file contains this environment's Hugging Face token.

    Args:
        folder: The assembled folder.

    Raises:
        HubUploadError: If a file contains the token (the token itself is not part of the message).
    """
    tokens = [t.encode() for t in _current_tokens()]
    if not tokens:
        return
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            with path.open("rb") as handle:
                data = handle.read()
            if any(token in data for token in tokens):
                raise HubUploadError(f"{path.relative_to(folder).as_posix()} contains your Hugging Face token; "
                                     "refusing to upload it.")


def verify_repo_folder(folder: PathLike, timeout: float = 300.0) -> str:
    """Check that an assembled folder is a loadable, self-contained repository.

    Static checks: no pickle files, every code file and safetensors weights present, and a model card whose metadata
    `huggingface_hub.ModelCard` parses with the required fields and which has usage snippets. Then `hub_verify.py`
    runs in a separate Python process (killed after `timeout` seconds) where `centerfocus` cannot be imported, with
    `HF_HUB_OFFLINE=1` and no token: AutoConfig, AutoProcessor, AutoModelForVision2Seq (4.57 only),
    AutoModelForImageTextToText and AutoModel load with `trust_remote_code=True` (as the remote-code classes, with no
    missing, unexpected or mismatched weights), both generation classes give the same caption for a generated image,
    each pipeline of `CAPTIONING_TASKS` gives that caption, and each usage snippet of the card, pointed at the folder
    and without `revision=`, prints it.

    Args:
        folder: The assembled folder.
        timeout: Seconds the verification process may take.

    Returns:
        The caption of the test image (may be empty for an untrained model).

    Raises:
        HubUploadError: With the failed check and its error.
    """
    from huggingface_hub import ModelCard

    folder = Path(folder).resolve()
    refused, ignored = find_pickle_files(folder)
    if refused or ignored:
        raise HubUploadError(f"{folder} holds pickle file(s): {', '.join(refused + ignored)}.")
    missing = [name for name in code_files(folder) if not (folder / name).is_file()]
    if missing:
        raise HubUploadError(f"{folder} lacks code file(s) {', '.join(missing)}.")
    _weight_files(folder)
    card_path = folder / "README.md"
    if not card_path.is_file():
        raise HubUploadError(f"{folder} has no model card (README.md).")
    card_text = card_path.read_text(encoding="utf-8")
    try:
        metadata = ModelCard(card_text, ignore_metadata_errors=False).data.to_dict()
    except Exception as error:
        raise HubUploadError(f"README.md metadata is not valid Hub metadata: {error}") from error
    for key, expected in (("pipeline_tag", "image-to-text"), ("library_name", "transformers")):
        if metadata.get(key) != expected:
            raise HubUploadError(f"README.md metadata: {key} is {metadata.get(key)!r}, expected {expected!r}.")
    if not metadata.get("license"):
        raise HubUploadError("README.md metadata has no license.")
    if "custom_code" not in (metadata.get("tags") or []):
        raise HubUploadError("README.md metadata tags lack 'custom_code'.")
    snippets = usage_snippets(card_text)
    if len(snippets) < 2:
        raise HubUploadError("README.md needs usage snippets (pipeline and generate) with trust_remote_code=True.")

    with tempfile.TemporaryDirectory(prefix="centerfocus-verify-") as work:
        result_path = Path(work) / "result.json"
        payload = {"folder": str(folder), "result": str(result_path),
                   "snippets": [localize_snippet(code, folder) for code in snippets],
                   "vision2seq": auto_model_for_vision2seq() is not None, "pipeline_tasks": list(CAPTIONING_TASKS)}
        logger.info(f"Verifying {folder} in a fresh process without centerfocus (timeout {timeout:.0f} s).")
        try:
            process = subprocess.run([sys.executable, str(VERIFY_PROGRAM), json.dumps(payload)],
                                     capture_output=True, text=True, timeout=timeout, cwd=work,
                                     env=_clean_environment(str(Path(work) / "modules")))
        except subprocess.TimeoutExpired as error:
            raise HubUploadError(f"Verification did not finish within {timeout:.0f} s; refusing.") from error
        result = json.loads(result_path.read_text()) if result_path.is_file() else None
    if result is None:
        raise HubUploadError(f"The verification process failed (exit code {process.returncode}) without a result:\n"
                             + redact(process.stderr[-3000:]))
    if not result["ok"]:
        if result.get("traceback"):
            logger.debug(f"Verification traceback:\n{redact(result['traceback'])}")
        raise HubUploadError(f"Verification failed at {result['step']}: {redact(result['error'])}")
    logger.info(f"Verified: {', '.join(result['checks'])}.")
    return result["caption"]


# ----------------------------------------------------------------------------------------------------------------
# Upload
# ----------------------------------------------------------------------------------------------------------------


def list_repo_files(folder: PathLike) -> list[str]:
    """Every file under `folder`, relative POSIX paths, sorted."""
    root = Path(folder)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def upload_folder_to_hub(folder: PathLike, repo_id: str, private: bool = False, revision: Optional[str] = None,
                         commit_message: Optional[str] = None, api: Optional[Any] = None) -> str:
    """Create the repository (if needed) and upload every file of `folder` in a single commit.

    Calls `api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)`, then, for a `revision`
    other than "main", `api.create_branch(repo_id, branch=revision, exist_ok=True)`, then one
    `api.create_commit(...)` with a `CommitOperationAdd` per file. Files already in the repository that `folder`
    lacks are left as they are. An existing repository keeps its visibility.

    Args:
        folder: The verified folder.
        repo_id: `owner/name`.
        private: Create the repository as private.
        revision: The branch to commit to (created from main when missing); None means main.
        commit_message: The commit message.
        api: An `HfApi`-like client; default `huggingface_hub.HfApi()`, which takes the token from the usual
            sources (`HF_TOKEN`, the stored login).

    Returns:
        The commit URL.
    """
    from huggingface_hub import CommitOperationAdd

    _validate_repo_id(repo_id)
    _validate_revision(revision)
    api = api if api is not None else huggingface_hub.HfApi()
    files = list_repo_files(folder)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(Path(folder) / name)) for name in files]
    info = api.create_commit(repo_id, operations=operations, repo_type="model", revision=revision or "main",
                             commit_message=commit_message or f"Upload CenterFocus model ({len(files)} files)")
    url = getattr(info, "commit_url", None) or str(info)
    logger.info(f"Uploaded {len(files)} files to {repo_id}@{revision or 'main'}: {url}")
    return url


def _remove_assembled(folder: Path, keep_folder: bool) -> None:
    """Remove a refused dry-run folder (or, when it existed empty before, its contents)."""
    if not folder.is_dir():
        return
    if not keep_folder:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for path in folder.iterdir():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def publish(model_dir: PathLike, repo_id: str, private: bool = False, revision: Optional[str] = None,
            dry_run_dir: Optional[PathLike] = None, license: str = "apache-2.0",
            commit_message: Optional[str] = None, datasets: Optional[Iterable[str]] = None,
            refresh_code: bool = False, verify_timeout: float = 300.0, api: Optional[Any] = None) -> PublishResult:
    """Assemble, verify and (unless a dry run) upload a trained folder; nothing is uploaded when a check fails.

    Args:
        model_dir: The trained folder.
        repo_id: `owner/name`.
        private: Create the repository as private.
        revision: Branch to upload to (default main).
        dry_run_dir: Write the repository folder here and stop after verification (no client is created). The
            folder is removed again when a check fails.
        license: Hub license id for the model card.
        commit_message: The commit message.
        datasets: Hub dataset ids for the model card.
        refresh_code: Use the installed package's code files instead of the folder's.
        verify_timeout: Seconds the verification process may take.
        api: An `HfApi`-like client for the upload (default `huggingface_hub.HfApi()`).

    Returns:
        What was done.

    Raises:
        HubUploadError: When the folder is refused or fails verification (nothing uploaded).
        HubClientError: When the Hub client fails during the upload.
    """
    _validate_repo_id(repo_id)
    _validate_revision(revision)
    if dry_run_dir is not None and Path(dry_run_dir).exists() and (
            not Path(dry_run_dir).is_dir() or any(Path(dry_run_dir).iterdir())):
        raise HubUploadError(f"{dry_run_dir} exists and is not an empty folder; choose a new output folder.")
    if dry_run_dir is not None:
        target = Path(dry_run_dir)
        created = not target.exists()
        try:
            files = assemble_repo_folder(model_dir, target, repo_id, revision, license, datasets, refresh_code)
            check_no_token(target)
            caption = verify_repo_folder(target, timeout=verify_timeout)
        except HubUploadError:
            _remove_assembled(target, keep_folder=not created)
            raise
        return PublishResult(folder=target, files=files, caption=caption)

    if api is None and not _current_tokens():
        raise HubUploadError("No Hugging Face token found: run `huggingface-cli login` or set HF_TOKEN in the "
                             "environment (never on the command line).")
    with tempfile.TemporaryDirectory(prefix="centerfocus-hub-") as work:
        folder = Path(work) / repo_id.split("/")[-1]
        files = assemble_repo_folder(model_dir, folder, repo_id, revision, license, datasets, refresh_code)
        check_no_token(folder)
        caption = verify_repo_folder(folder, timeout=verify_timeout)
        try:
            url = upload_folder_to_hub(folder, repo_id, private=private, revision=revision,
                                       commit_message=commit_message, api=api)
        except Exception as error:
            raise HubClientError(f"{type(error).__name__}: {redact(str(error))}") from error
    return PublishResult(folder=folder, files=files, caption=caption, commit_url=url)
