"""The verification process of `hub.verify_repo_folder`: load an assembled repository folder as a Hub user would,
where the `centerfocus` package cannot be imported.

    python hub_verify.py PAYLOAD_JSON

It runs by file path, never as `centerfocus.tools.hub_verify`, so the package is not imported: `block_centerfocus`
runs before anything else, and this module imports only the standard library at module level (numpy, PIL and
transformers inside `verify`, after the blocker) and nothing of centerfocus. The parent says what to check, so that
only `centerfocus._compat` tells the transformers lines apart. The payload:

- `folder`: the repository folder; `result`: where the result JSON goes;
- `snippets`: the model card's usage snippets, pointed at the folder (`hub_card.localize_snippet`);
- `vision2seq`: whether to load `AutoModelForVision2Seq` too (4.57; transformers 5 removed it);
- `pipeline_tasks`: the captioning pipeline tasks to run (`_compat.CAPTIONING_TASKS`).

The result: `{"ok": true, "checks": [...], "caption": "..."}`, or `{"ok": false, "checks": [...], "step": "...",
"error": "...", "traceback": "..."}` (`traceback` only for an unexpected error). The exit code is 0 when the folder
passed, 1 when it failed.
"""

import contextlib
import importlib.abc
import io
import json
import os
import sys
import traceback
import warnings
from typing import Any, NoReturn, Optional


class _BlockCenterFocus(importlib.abc.MetaPathFinder):
    """Refuses `centerfocus` and its submodules."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "centerfocus" or name.startswith("centerfocus."):
            raise ImportError(f"{name} is blocked: the repository must load without the centerfocus package")
        return None


def block_centerfocus() -> None:
    """Make `import centerfocus` (and of any of its submodules) fail in this process, and take this file's folder off
    `sys.path` (Python puts a script's folder first), where the other tools modules would import as top-level ones."""
    sys.meta_path.insert(0, _BlockCenterFocus())
    if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]


#: Python source that runs `block_centerfocus` of this file, for `python -c IMPORT_BLOCKER + code` (the tests' fresh
#: processes).
IMPORT_BLOCKER = f"import runpy\nrunpy.run_path({__file__!r})['block_centerfocus']()\n"


class CheckFailed(Exception):
    """The folder failed the check that is running (`Checks.step`)."""


class Checks:
    """The checks passed so far and the one running, which the result names when it fails."""

    def __init__(self) -> None:
        self.passed: list[str] = []
        self.step = "isolation"

    def start(self, step: str) -> None:
        self.step = step

    def fail(self, message: str) -> NoReturn:
        raise CheckFailed(message)

    def done(self) -> None:
        self.passed.append(self.step)


def make_test_image() -> Any:
    """A fixed 64 x 64 test image (a red square on dark noise), also saved as `image.png` for the usage snippets."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    array = rng.integers(0, 80, size=(64, 64, 3), dtype=np.uint8)
    array[20:44, 20:44] = (220, 40, 40)
    image = Image.fromarray(array)
    image.save("image.png")
    return image


def load_models(folder: str, vision2seq: bool, checks: Checks) -> dict[str, Any]:
    """Load the folder with each Auto model class; each must give the remote class with exactly the stored weights."""
    import transformers
    from transformers import AutoModel, AutoModelForImageTextToText

    classes = {"AutoModelForImageTextToText": AutoModelForImageTextToText, "AutoModel": AutoModel}
    if vision2seq:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            classes = {"AutoModelForVision2Seq": transformers.AutoModelForVision2Seq, **classes}
    models = {}
    for name, cls in classes.items():
        checks.start(name)
        expected = "CenterFocusModel" if name == "AutoModel" else "CenterFocusForConditionalGeneration"
        model, info = cls.from_pretrained(folder, trust_remote_code=True, use_safetensors=True,
                                          output_loading_info=True)
        if type(model).__name__ != expected or not type(model).__module__.startswith("transformers_modules"):
            checks.fail(f"got {type(model).__module__}.{type(model).__name__}, expected remote {expected}")
        problems = {k: sorted(v)[:8] for k, v in info.items() if k != "error_msgs" and v}
        if problems or info.get("error_msgs"):
            checks.fail("config.json does not match the weights: " + json.dumps(problems or info["error_msgs"]))
        models[name] = model.eval()
        checks.done()
    return models


def caption(models: dict[str, Any], processor: Any, image: Any, checks: Checks) -> str:
    """The test image's caption by `generate`; both generation classes must give it."""
    checks.start("generate")
    inputs = processor(images=[image], return_tensors="pt")
    expected = processor.batch_decode(models["AutoModelForImageTextToText"].generate(**inputs),
                                      skip_special_tokens=True)[0].strip()
    if "AutoModelForVision2Seq" in models:
        other = processor.batch_decode(models["AutoModelForVision2Seq"].generate(**inputs),
                                       skip_special_tokens=True)[0]
        if other.strip() != expected:
            checks.fail(f"AutoModelForVision2Seq and AutoModelForImageTextToText disagree: {other!r} vs {expected!r}")
    checks.done()
    return expected


def check_pipelines(folder: str, tasks: list[str], image: Any, expected: str, checks: Checks) -> None:
    """Each captioning pipeline task must give the `generate` caption (image-text-to-text with `text=""`)."""
    from transformers import pipeline

    checks.start("pipeline")
    for task in tasks:
        captioner = pipeline(task, model=folder, trust_remote_code=True)
        outputs = (captioner(images=image, text="", return_full_text=False) if task == "image-text-to-text"
                   else captioner(image))
        text = outputs[0]["generated_text"]
        if not isinstance(text, str) or text.strip() != expected:
            checks.fail(f"{task} pipeline caption {text!r} differs from generate() caption {expected!r}")
    checks.done()


def check_snippets(snippets: list[str], expected: str, checks: Checks) -> None:
    """Each usage snippet must print the `generate` caption as its last line."""
    for index, code in enumerate(snippets):
        checks.start(f"model card snippet {index + 1}")
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            exec(compile(code, f"<model card snippet {index + 1}>", "exec"), {"__name__": "__main__"})
        # the last line printed is the caption; an empty caption (a random or briefly trained model) is an empty line
        printed = buffer.getvalue().splitlines()
        if not printed or printed[-1].strip() != expected:
            checks.fail(f"printed {[line.strip() for line in printed[-1:]]!r}, expected the caption {expected!r}")
        checks.done()


def verify(payload: dict[str, Any], checks: Checks) -> str:
    """Run every check on `payload["folder"]`; returns the test image's caption."""
    try:
        import centerfocus  # noqa: F401
    except ImportError:
        pass
    else:
        checks.fail("centerfocus is importable in the verification process")
    checks.start("imports")
    from transformers import AutoConfig, AutoProcessor

    folder = payload["folder"]
    checks.start("AutoConfig")
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    if type(config).__name__ != "CenterFocusConfig" or not type(config).__module__.startswith("transformers_modules"):
        checks.fail(f"got {type(config).__module__}.{type(config).__name__}, expected remote CenterFocusConfig")
    checks.done()

    checks.start("AutoProcessor")
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    if type(processor).__name__ != "CenterFocusProcessor":
        checks.fail(f"got {type(processor).__name__}, expected CenterFocusProcessor")
    checks.done()

    models = load_models(folder, payload["vision2seq"], checks)
    checks.start("generate")
    image = make_test_image()
    expected = caption(models, processor, image, checks)
    check_pipelines(folder, payload["pipeline_tasks"], image, expected, checks)
    check_snippets(payload["snippets"], expected, checks)
    return expected


def main(argv: Optional[list[str]] = None) -> int:
    """Verify the folder of the payload (`argv[0]`, default the command line's), write the result; the exit code."""
    payload = json.loads((sys.argv[1:] if argv is None else argv)[0])
    checks = Checks()
    try:
        ok, extra = True, {"caption": verify(payload, checks)}
    except CheckFailed as failure:
        ok, extra = False, {"step": checks.step, "error": str(failure)}
    except SystemExit:
        raise
    except BaseException as error:
        message = f"{type(error).__name__}: {error}".strip()
        if "size mismatch" in message:
            message = "config.json does not match the weights: " + message
        ok, extra = False, {"step": checks.step, "error": message, "traceback": traceback.format_exc()[-4000:]}
    with open(payload["result"], "w") as handle:
        json.dump({"ok": ok, "checks": checks.passed, **extra}, handle)
    return 0 if ok else 1


if __name__ == "__main__":
    block_centerfocus()
    sys.exit(main())
