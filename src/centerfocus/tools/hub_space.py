"""Publish a Hugging Face Space (Gradio) that captions with a published CenterFocus model: `hub_upload.py --space`.

The Space folder holds:

- `app.py`: the source of `space_app.py` (which imports nothing of centerfocus) with `MODEL_REPO` / `MODEL_REVISION`
  set to the model repository; it loads the model with `AutoModelForImageTextToText` / `AutoProcessor` and
  `trust_remote_code=True`, as any Hub user would;
- `requirements.txt`: transformers pinned to the version the model was saved with (`transformers_version` of
  config.json, as the card's repository records it), torch pinned to this environment's, Gradio to the card's
  `sdk_version`;
- `README.md`: the Space card (title, `sdk: gradio`, `sdk_version`, `app_file: app.py`, `models: [OWNER/MODEL]`);
- `examples/`: the model folder's example images (`space_app.find_examples`), when it has any.

`verify_space_folder` checks the card, then runs `space_verify.py` in a fresh process where `centerfocus` cannot be
imported and the Hub is offline: the Space's `app.py` loads the assembled model repository folder, builds its page and
captions the model check's test image, which must give the caption `generate()` gave in the model check. `publish_with_space`
assembles and verifies the model repository (`hub.publish`, as a dry run) and the Space, and uploads both only when
both passed.
"""

import json
import logging
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from . import hub, space_app
from .hub import HubClientError, HubUploadError, PathLike, PublishResult


logger = logging.getLogger(__name__)

SPACE_APP_SOURCE = Path(space_app.__file__).resolve()
VERIFY_PROGRAM = Path(__file__).resolve().with_name("space_verify.py")
SPACE_FILES = ("README.md", "app.py", "requirements.txt")


@dataclass
class SpaceResult:
    """What `publish_with_space` did for the Space: its folder, files, the check's caption, the commit URL (None for
    a dry run)."""

    folder: Path
    files: list[str]
    caption: str
    commit_url: Optional[str] = None


def _gradio_version() -> str:
    try:
        import gradio
    except ImportError:
        raise HubUploadError('A Space is checked by running its Gradio app here: pip install "centerfocus[app]".') \
            from None
    return gradio.__version__


def space_requirements(model_folder: PathLike) -> list[str]:
    """requirements.txt of the Space: transformers as the model records it (config.json's `transformers_version`),
    torch as installed here, pillow as the package needs it, Gradio as installed here (the card's sdk_version)."""
    import torch

    config = json.loads((Path(model_folder) / "config.json").read_text(encoding="utf-8"))
    transformers_version = config.get("transformers_version")
    if not transformers_version:
        raise HubUploadError(f"{model_folder}/config.json does not record transformers_version.")
    return [f"transformers=={transformers_version}", f"torch=={torch.__version__.split('+')[0]}", "pillow>=10",
            f"gradio=={_gradio_version()}"]


def space_card(space_id: str, model_repo_id: str, license: str = "apache-2.0") -> str:
    """README.md of the Space: Hub metadata (Gradio SDK, app file, the model) and a short description."""
    from huggingface_hub import SpaceCard, SpaceCardData

    data = SpaceCardData(title=space_id.split("/")[-1], sdk="gradio", sdk_version=_gradio_version(),
                         app_file="app.py", license=license, models=[model_repo_id], emoji="🎯", colorFrom="indigo",
                         colorTo="gray", pinned=False, short_description="Caption images with a CenterFocus model")
    body = (f"# {space_id.split('/')[-1]}\n\nCaptions images with [{model_repo_id}]"
            f"(https://huggingface.co/{model_repo_id}), a CenterFocus captioner loaded with `trust_remote_code=True`. "
            "Upload or paste an image, choose greedy decoding, beam search or seeded sampling, and press **Caption**; "
            "the Batch tab captions several files at once.\n")
    return str(SpaceCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def space_app_source(model_repo_id: str, revision: Optional[str] = None) -> str:
    """`space_app.py`'s source with the model repository (and revision) filled in."""
    source = SPACE_APP_SOURCE.read_text(encoding="utf-8")
    for name, value in (("MODEL_REPO", model_repo_id), ("MODEL_REVISION", revision)):
        source, count = re.subn(rf"^{name} = None$", f"{name} = {json.dumps(value) if value else None}", source,
                                count=1, flags=re.MULTILINE)
        if count != 1:
            raise HubUploadError(f"{SPACE_APP_SOURCE} has no `{name} = None` line to fill in.")
    return source


def assemble_space_folder(model_dir: PathLike, model_folder: PathLike, out_dir: PathLike, space_id: str,
                          model_repo_id: str, revision: Optional[str] = None, license: str = "apache-2.0") -> list[str]:
    """Write the Space folder `out_dir` (which must not exist or be empty) for `model_repo_id`.

    Args:
        model_dir: The trained folder (its example images go to `examples/`).
        model_folder: The assembled model repository folder (for the transformers version).
        out_dir: Where the Space folder goes.
        space_id: `owner/name` of the Space.
        model_repo_id: `owner/name` of the model repository the Space loads.
        revision: The model repository's branch (None: main).
        license: The Space card's license.

    Returns:
        The Space's files, relative POSIX paths, sorted.
    """
    hub._validate_repo_id(space_id)
    hub._validate_repo_id(model_repo_id)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HubUploadError(f"{out} exists and is not an empty folder; choose a new output folder.")
    out.mkdir(parents=True, exist_ok=True)
    (out / "app.py").write_text(space_app_source(model_repo_id, revision), encoding="utf-8")
    (out / "requirements.txt").write_text("\n".join(space_requirements(model_folder)) + "\n", encoding="utf-8")
    (out / "README.md").write_text(space_card(space_id, model_repo_id, license), encoding="utf-8")
    examples = space_app.find_examples(model_dir)
    if examples:
        (out / "examples").mkdir()
        for index, path in enumerate(examples):
            # a prefix keeps files of the folder and of its examples/ apart when their names are the same
            (out / "examples" / f"{index:02d}-{Path(path).name}").write_bytes(Path(path).read_bytes())
    return hub.list_repo_files(out)


def verify_space_folder(folder: PathLike, model_folder: PathLike, expected_caption: str,
                        timeout: float = 300.0) -> str:
    """Check an assembled Space: its card's metadata, then its `app.py` in a fresh process without centerfocus
    (`space_verify.py`), against the assembled model repository folder; the app's caption of the model check's test
    image must be `expected_caption` (what `generate()` gave there). Returns that caption.

    Raises:
        HubUploadError: With the failed check.
    """
    from huggingface_hub import SpaceCard

    folder, model_folder = Path(folder).resolve(), Path(model_folder).resolve()
    missing = [name for name in SPACE_FILES if not (folder / name).is_file()]
    if missing:
        raise HubUploadError(f"The Space folder {folder} lacks {', '.join(missing)}.")
    try:
        metadata = SpaceCard((folder / "README.md").read_text(encoding="utf-8"),
                             ignore_metadata_errors=False).data.to_dict()
    except Exception as error:
        raise HubUploadError(f"The Space's README.md metadata is not valid Hub metadata: {error}") from error
    for key, expected in (("sdk", "gradio"), ("app_file", "app.py"), ("sdk_version", _gradio_version())):
        if metadata.get(key) != expected:
            raise HubUploadError(f"The Space's README.md metadata: {key} is {metadata.get(key)!r}, expected "
                                 f"{expected!r}.")
    if not metadata.get("models"):
        raise HubUploadError("The Space's README.md metadata names no model (models:).")
    if f"gradio=={metadata['sdk_version']}" not in (folder / "requirements.txt").read_text().split():
        raise HubUploadError("The Space's requirements.txt does not pin the Gradio version of its card.")

    with tempfile.TemporaryDirectory(prefix="centerfocus-space-verify-") as work:
        result_path = Path(work) / "result.json"
        payload = {"space": str(folder), "model": str(model_folder), "result": str(result_path)}
        logger.info(f"Verifying the Space {folder} in a fresh process without centerfocus (timeout {timeout:.0f} s).")
        try:
            process = subprocess.run([sys.executable, str(VERIFY_PROGRAM), json.dumps(payload)], capture_output=True,
                                     text=True, timeout=timeout, cwd=work,
                                     env=hub._clean_environment(str(Path(work) / "modules")))
        except subprocess.TimeoutExpired as error:
            raise HubUploadError(f"The Space check did not finish within {timeout:.0f} s; refusing.") from error
        result = json.loads(result_path.read_text()) if result_path.is_file() else None
    if result is None:
        raise HubUploadError(f"The Space check failed (exit code {process.returncode}) without a result:\n"
                             + hub.redact(process.stderr[-3000:]))
    if not result["ok"]:
        logger.debug(f"Space check traceback:\n{hub.redact(result.get('traceback', ''))}")
        raise HubUploadError(f"The Space's app.py failed its check: {hub.redact(result['error'])}")
    if result["caption"] != expected_caption:
        raise HubUploadError(f"The Space's app captions the test image {result['caption']!r}, but the model's "
                             f"generate() gives {expected_caption!r}.")
    logger.info(f"Verified the Space: its page captions the test image as generate() does ({expected_caption!r}).")
    return result["caption"]


def upload_space(folder: PathLike, space_id: str, private: bool = False, commit_message: Optional[str] = None,
                 api: Optional[Any] = None) -> str:
    """Create the Space (Gradio SDK; an existing one is kept) and upload the folder in one commit; the commit URL."""
    import huggingface_hub

    api = api if api is not None else huggingface_hub.HfApi()
    files = hub.list_repo_files(folder)
    api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    info = api.upload_folder(repo_id=space_id, repo_type="space", folder_path=str(folder),
                             commit_message=commit_message or f"Upload CenterFocus captioning Space ({len(files)} files)")
    url = getattr(info, "commit_url", None) or str(info)
    logger.info(f"Uploaded {len(files)} files to the Space {space_id}: {url}")
    return url


def publish_with_space(model_dir: PathLike, repo_id: str, space_id: str, space_only: bool = False,
                       dry_run_dir: Optional[PathLike] = None, private: bool = False,
                       revision: Optional[str] = None, license: str = "apache-2.0",
                       commit_message: Optional[str] = None, datasets: Optional[Any] = None,
                       refresh_code: bool = False, verify_timeout: float = 300.0,
                       api: Optional[Any] = None) -> tuple[PublishResult, SpaceResult]:
    """Assemble and verify the model repository (`hub.publish`'s checks) and its Space, then, unless a dry run,
    upload the model (unless `space_only`: it is on the Hub already) and the Space. Nothing is uploaded unless both
    passed. A dry run leaves `DRY_RUN_DIR/model` and `DRY_RUN_DIR/space`.

    Raises:
        HubUploadError: A check failed (nothing uploaded).
        HubClientError: The Hub client failed during an upload.
    """
    hub._validate_repo_id(space_id)
    if dry_run_dir is not None and Path(dry_run_dir).exists() and (
            not Path(dry_run_dir).is_dir() or any(Path(dry_run_dir).iterdir())):
        raise HubUploadError(f"{dry_run_dir} exists and is not an empty folder; choose a new output folder.")
    if dry_run_dir is None and api is None and not hub._current_tokens():
        raise HubUploadError("No Hugging Face token found: run `huggingface-cli login` or set HF_TOKEN in the "
                             "environment (never on the command line).")
    with tempfile.TemporaryDirectory(prefix="centerfocus-space-") as work:
        base = Path(dry_run_dir) if dry_run_dir is not None else Path(work)
        created = not base.exists()
        try:
            model = hub.publish(model_dir, repo_id, revision=revision, dry_run_dir=base / "model", license=license,
                                datasets=datasets, refresh_code=refresh_code, verify_timeout=verify_timeout)
            files = assemble_space_folder(model_dir, model.folder, base / "space", space_id, repo_id, revision, license)
            hub.check_no_token(base / "space")
            caption = verify_space_folder(base / "space", model.folder, model.caption, timeout=verify_timeout)
        except HubUploadError:
            if dry_run_dir is not None:
                hub._remove_assembled(base, keep_folder=not created)
            raise
        space = SpaceResult(folder=base / "space", files=files, caption=caption)
        if dry_run_dir is not None:
            return model, space
        try:
            if not space_only:
                model.commit_url = hub.upload_folder_to_hub(model.folder, repo_id, private=private, revision=revision,
                                                            commit_message=commit_message, api=api)
            space.commit_url = upload_space(space.folder, space_id, private=private, api=api)
        except Exception as error:
            raise HubClientError(f"{type(error).__name__}: {hub.redact(str(error))}") from error
    return model, space
