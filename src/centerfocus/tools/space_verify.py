"""The verification process of `hub_space.verify_space_folder`: run an assembled Space's `app.py` as the Space would,
where the `centerfocus` package cannot be imported.

    python space_verify.py PAYLOAD_JSON

Like `hub_verify.py` it runs by file path and blocks `centerfocus` (with `hub_verify.block_centerfocus`) before
anything else. The payload: `space` (the Space folder), `model` (the assembled model repository folder, given to the
app as $CENTERFOCUS_SPACE_MODEL), `result` (where the result JSON goes). The app is imported from `app.py` by path,
loads the model with its own code (Auto classes, `trust_remote_code=True`), builds its Gradio page and captions
`hub_verify.make_test_image()` from its file through the page's caption function. The result: `{"ok": true,
"caption": ..., "examples": N}` or `{"ok": false, "error": ..., "traceback": ...}`.
"""

import json
import os
import runpy
import sys
import traceback


HUB_VERIFY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hub_verify.py")


def verify(payload: dict) -> dict:
    import importlib.util

    tools = runpy.run_path(HUB_VERIFY)
    tools["block_centerfocus"]()
    try:
        import centerfocus  # noqa: F401
    except ImportError:
        pass
    else:
        raise RuntimeError("centerfocus is importable in the Space verification process")
    os.environ["CENTERFOCUS_SPACE_MODEL"] = payload["model"]
    spec = importlib.util.spec_from_file_location("app", os.path.join(payload["space"], "app.py"))
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    caption_app = app.load_space_app()
    if type(caption_app.model).__module__.split(".")[0] != "transformers_modules":
        raise RuntimeError(f"the Space loaded {type(caption_app.model).__module__}, not the repository's own code")
    blocks = caption_app.blocks()
    if type(blocks).__name__ != "Blocks":
        raise RuntimeError(f"the Space's page is a {type(blocks).__name__}, not gradio.Blocks")
    tools["make_test_image"]()  # writes image.png in the working folder
    return {"caption": caption_app.caption("image.png"), "examples": len(caption_app.examples)}


def main(argv: list) -> int:
    payload = json.loads(argv[0])
    try:
        result = {"ok": True, **verify(payload)}
    except BaseException as error:
        result = {"ok": False, "error": f"{type(error).__name__}: {getattr(error, 'message', error)}",
                  "traceback": traceback.format_exc()[-4000:]}
    with open(payload["result"], "w") as handle:
        json.dump(result, handle)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
