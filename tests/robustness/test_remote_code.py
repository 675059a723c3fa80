"""The processor files are Hub remote code: they must import only numpy, PIL, transformers, the standard library
and each other, and their new checks must work where the centerfocus package is not installed."""

import ast
import shutil
from pathlib import Path

import pytest

import centerfocus

from ..fresh_process import run_without_package


pytestmark = pytest.mark.timeout(120)

PACKAGE = Path(centerfocus.__file__).parent
ALLOWED = {"os", "json", "typing", "numpy", "PIL", "transformers"}


@pytest.mark.parametrize("name", ["image_processing_centerfocus.py", "processing_centerfocus.py"])
def test_remote_code_files_import_only_allowed_modules(name):
    tree = ast.parse((PACKAGE / name).read_text())
    for node in tree.body:  # module level only: lazy imports inside functions are allowed
        if isinstance(node, ast.Import):
            roots = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import of a sibling remote-code file
                continue
            roots = {node.module.split(".")[0]}
        else:
            continue
        assert roots <= ALLOWED, f"{name} imports {roots - ALLOWED} at module level"


def test_paths_and_file_checks_work_without_the_package(saved_folder, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(saved_folder, folder)
    broken_folder = tmp_path / "no_tokenizer"
    shutil.copytree(saved_folder, broken_folder)
    (broken_folder / "tokenizer.json").unlink()
    from PIL import Image

    Image.new("RGB", (20, 30), (200, 10, 10)).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"")
    result = run_without_package(f"""
        import json
        from transformers import AutoProcessor
        processor = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        shape = list(processor(images={str(tmp_path / "good.png")!r})["pixel_values"].shape)
        try:
            processor(images=[{str(tmp_path / "good.png")!r}, {str(tmp_path / "bad.png")!r}])
            image_error = None
        except ValueError as error:
            image_error = str(error)
        try:
            AutoProcessor.from_pretrained({str(broken_folder)!r}, trust_remote_code=True)
            file_error = None
        except FileNotFoundError as error:
            file_error = str(error)
        print(json.dumps({{"module": type(processor).__module__, "shape": shape, "image_error": image_error,
                          "file_error": file_error}}))
    """)
    assert result["module"].startswith("transformers_modules.")  # the copied remote code, not the package
    assert result["shape"] == [1, 3, 32, 32]
    assert result["image_error"].startswith("Image 1: Cannot read image file") and "bad.png" in result["image_error"]
    assert "has no tokenizer vocabulary file" in result["file_error"]
