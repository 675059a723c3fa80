"""Fetch transformers' own common test mixins for the installed transformers version, at test time.

The mixins (`ModelTesterMixin`, `ConfigTester`, `ImageProcessingTestMixin`, `ProcessorTesterMixin`) live in the
top-level `tests/*.py` files of the transformers source distribution; they are not part of the installed package and
are never copied into this repository. On first use they are downloaded with pip, for exactly the installed
`transformers.__version__`, and unpacked into a cache outside the repository:

    $CENTERFOCUS_UPSTREAM_TESTS/<version>/        (default: ~/.cache/centerfocus/transformers-tests/<version>/)
        upstream/__init__.py                      our marker (makes the unpacked files one package)
        upstream/test_*.py                        the sdist's top-level tests/*.py, unmodified
        upstream/generation/test_utils.py         our shim: empty GenerationTesterMixin
        upstream/exporters/test_export.py         our shim: empty ExportTesterMixin
        upstream/utils/test_configuration_utils.py  our shim: config_common_kwargs
        utils/fetch_hub_objects_for_ci.py         our shim: url_to_local_path (5.x appends <version>/utils to sys.path)
        .complete                                 written last; a cache without it is rebuilt

The sdist ships only the top-level test files, not the subpackages they import; the shims above stand in for those
(see each shim's docstring). `CENTERFOCUS_TRANSFORMERS_SDIST=/path/transformers-X.tar.gz` uses a local sdist instead
of downloading (offline machines). Any failure raises `UpstreamUnavailable`, which the test modules turn into a
module-level skip naming the reason.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers

from centerfocus._compat import TRANSFORMERS_5


VERSION = transformers.__version__
PACKAGE = "upstream"
# the top-level test files the suites here import (the rest of tests/*.py is unpacked too, unused)
MODULES = ("test_configuration_common", "test_modeling_common", "test_image_processing_common",
           "test_processing_common")

# set by conftest.pytest_configure: the pytest config, to register the markers the upstream files use
PYTEST_CONFIG = None
# a failed fetch, remembered for the process: the other test modules skip at once instead of retrying pip
_FETCH_ERROR = None


class UpstreamUnavailable(RuntimeError):
    """The upstream test files could not be fetched, unpacked or imported."""


def cache_root() -> Path:
    env = os.environ.get("CENTERFOCUS_UPSTREAM_TESTS")
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "centerfocus" / "transformers-tests"


def version_dir() -> Path:
    return cache_root() / VERSION


# ---- shims for the modules the sdist does not ship (written by us, not copied) -----------------------------------

_GENERATION_SHIM = '''\
"""Shim (CenterFocus harness): transformers' tests/generation/test_utils.py is not in the sdist. `ModelTesterMixin`
only imports `GenerationTesterMixin` (and checks a tester's inheritance from it); no generate() tests run here."""


class GenerationTesterMixin:
    pass
'''

_EXPORT_SHIM = '''\
"""Shim (CenterFocus harness): transformers' tests/exporters/test_export.py (5.x) is not in the sdist.
`ModelTesterMixin` derives from `ExportTesterMixin`; this empty stand-in adds no export tests."""


class ExportTesterMixin:
    pass
'''

# Common `PretrainedConfig` arguments, each with a non-default value, for `ConfigTester.check_config_arguments_init`
# (does a model config forward them to `PretrainedConfig.__init__`?). Written from the arguments `PretrainedConfig`
# documents on each line: 5.x kept only a few as dataclass fields (the rest moved or were removed).
_CONFIG_SHIM_5 = '''\
"""Shim (CenterFocus harness): `config_common_kwargs`, normally in transformers' tests/utils/test_configuration_utils.py
(not in the sdist). Non-default values for the common arguments `PreTrainedConfig` documents in transformers 5."""

config_common_kwargs = {
    "output_hidden_states": True,
    "output_attentions": True,
    "return_dict": False,
    "dtype": "float16",
    "chunk_size_feed_forward": 4,
    "architectures": ["CenterFocusSomethingModel"],
    "id2label": {0: "cat", 1: "dog", 2: "bird"},
    "label2id": {"cat": 0, "dog": 1, "bird": 2},
    "problem_type": "multi_label_classification",
}
'''

_CONFIG_SHIM_4 = '''\
"""Shim (CenterFocus harness): `config_common_kwargs`, normally in transformers' tests/utils/test_configuration_utils.py
(not in the sdist). Non-default values for the common arguments `PretrainedConfig.__init__` takes in transformers 4
(the legacy generation parameters, which 4.x stores but wants in a GenerationConfig, are left out)."""

config_common_kwargs = {
    "output_hidden_states": True,
    "output_attentions": True,
    "return_dict": False,
    "torchscript": True,
    "dtype": "float16",
    "pruned_heads": {0: [1], 1: [0, 2]},
    "chunk_size_feed_forward": 4,
    "is_decoder": True,
    "cross_attention_hidden_size": 24,
    "add_cross_attention": True,
    "tie_encoder_decoder": True,
    "architectures": ["CenterFocusSomethingModel"],
    "finetuning_task": "captioning",
    "id2label": {0: "cat", 1: "dog", 2: "bird"},
    "label2id": {"cat": 0, "dog": 1, "bird": 2},
    "task_specific_params": {"captioning": {"max_new_tokens": 12}},
    "problem_type": "multi_label_classification",
    "tokenizer_class": "PreTrainedTokenizerFast",
    "prefix": "caption: ",
    "sep_token_id": 7,
}
'''

_FETCH_HUB_SHIM = '''\
"""Shim (CenterFocus harness) for transformers' utils/fetch_hub_objects_for_ci.py, which 5.x's common test files import
from the source tree's utils/ folder (not in the sdist). Nothing is downloaded here (HF_HUB_OFFLINE): an image URL maps
to a small synthetic image file written under this folder, so the mixins' "remote" test images are local and
deterministic; any other URL is returned unchanged (a test that needs it fails or skips on its own)."""

import hashlib
import os

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def url_to_local_path(url, return_url_if_not_found=True):
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return url
    name = url.rsplit("/", 1)[-1].split("?", 1)[0]
    if not name.lower().endswith(_IMAGE_SUFFIXES):
        return url
    os.makedirs(_HERE, exist_ok=True)
    path = os.path.join(_HERE, hashlib.sha1(url.encode()).hexdigest()[:12] + "_" + name)
    if not os.path.isfile(path):
        import numpy as np
        from PIL import Image

        seed = int(hashlib.sha1(url.encode()).hexdigest()[:8], 16)
        rng = np.random.default_rng(seed)
        array = rng.integers(0, 256, size=(64, 80, 3), dtype=np.uint8)
        tmp = path + f".{os.getpid()}.tmp"
        Image.fromarray(array).save(tmp, format="PNG" if name.lower().endswith(".png") else "JPEG")
        os.replace(tmp, path)
    return path
'''


def _shims() -> dict[str, str]:
    return {
        f"{PACKAGE}/__init__.py": f'"""transformers {VERSION} tests/*.py, unpacked by the CenterFocus harness."""\n',
        f"{PACKAGE}/generation/__init__.py": "",
        f"{PACKAGE}/generation/test_utils.py": _GENERATION_SHIM,
        f"{PACKAGE}/exporters/__init__.py": "",
        f"{PACKAGE}/exporters/test_export.py": _EXPORT_SHIM,
        f"{PACKAGE}/utils/__init__.py": "",
        f"{PACKAGE}/utils/test_configuration_utils.py": _CONFIG_SHIM_5 if TRANSFORMERS_5 else _CONFIG_SHIM_4,
        "utils/fetch_hub_objects_for_ci.py": _FETCH_HUB_SHIM,
    }


# ---- fetching -----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive lock across processes (two venvs or pytest-xdist workers may fetch at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: no lock; the atomic rename below still keeps the cache consistent
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _download_sdist(dest: Path) -> Path:
    local = os.environ.get("CENTERFOCUS_TRANSFORMERS_SDIST")
    if local:
        if not os.path.isfile(local):
            raise UpstreamUnavailable(f"CENTERFOCUS_TRANSFORMERS_SDIST={local!r} is not a file")
        return Path(local)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "--quiet", f"transformers=={VERSION}", "-d", str(dest)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise UpstreamUnavailable(f"`pip download transformers=={VERSION}` did not run: {error}") from None
    sdists = sorted(dest.glob("transformers-*.tar.gz"))
    if not sdists:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise UpstreamUnavailable(f"`pip download --no-binary :all: transformers=={VERSION}` gave no sdist "
                                  f"(exit {result.returncode}): {' | '.join(tail) or 'no output'}")
    return sdists[0]


def _unpack_tests(sdist: Path, package_dir: Path) -> int:
    """Extract the sdist's top-level `tests/*.py` (only those, plain files, no paths) into `package_dir`."""
    count = 0
    try:
        with tarfile.open(sdist) as archive:
            for member in archive.getmembers():
                parts = member.name.split("/")
                if len(parts) == 3 and parts[1] == "tests" and parts[2].endswith(".py") and member.isfile():
                    source = archive.extractfile(member)
                    (package_dir / parts[2]).write_bytes(source.read())
                    count += 1
    except (tarfile.TarError, OSError) as error:
        raise UpstreamUnavailable(f"cannot read {sdist}: {error}") from None
    missing = [name for name in MODULES if not (package_dir / f"{name}.py").is_file()]
    if missing:
        raise UpstreamUnavailable(f"{sdist.name} has no tests/{missing[0]}.py")
    return count


def ensure_cache() -> Path:
    """The version's cache folder, fetched and unpacked on first use."""
    global _FETCH_ERROR
    if _FETCH_ERROR is not None:
        raise _FETCH_ERROR
    try:
        return _ensure_cache()
    except UpstreamUnavailable as error:
        _FETCH_ERROR = error
        raise


def _ensure_cache() -> Path:
    target = version_dir()
    if (target / ".complete").is_file():
        return target
    with _lock(cache_root() / f".{VERSION}.lock"):
        if (target / ".complete").is_file():
            return target
        cache_root().mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{VERSION}-", dir=cache_root()))
        try:
            staging = work / "tree"
            (staging / PACKAGE).mkdir(parents=True)
            sdist = _download_sdist(work / "download")
            _unpack_tests(sdist, staging / PACKAGE)
            for relative, text in _shims().items():
                path = staging / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
            (staging / ".complete").write_text(f"transformers {VERSION} from {sdist.name}\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


# ---- importing ----------------------------------------------------------------------------------------------------


def _register_markers(folder: Path) -> None:
    """`--strict-markers` (pyproject) refuses the pytest marks the upstream files and transformers.testing_utils use
    (transformers registers them in its own conftest): register each one found."""
    if PYTEST_CONFIG is None:
        return
    sources = [*folder.glob("*.py"), Path(transformers.__file__).parent / "testing_utils.py"]
    names = set()
    for source in sources:
        names.update(re.findall(r"\bmark\.([A-Za-z_][A-Za-z0-9_]*)\b", source.read_text(errors="replace")))
    known = {line.split(":")[0].split("(")[0].strip() for line in PYTEST_CONFIG.getini("markers")}
    builtin = {"parametrize", "skip", "skipif", "xfail", "usefixtures", "filterwarnings"}
    for name in sorted(names - known - builtin):
        PYTEST_CONFIG.addinivalue_line("markers", f"{name}: used by transformers' common tests")


def load(module: str):
    """Import `upstream.<module>` from the cache (fetching it first). Raises `UpstreamUnavailable`."""
    try:
        import parameterized  # noqa: F401
    except ImportError:
        raise UpstreamUnavailable("the `parameterized` package (imported by transformers' common tests) is not "
                                  "installed: `pip install parameterized`") from None
    folder = ensure_cache()
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    existing = sys.modules.get(PACKAGE)
    if existing is not None and Path(getattr(existing, "__file__", "") or "").parent != folder / PACKAGE:
        raise UpstreamUnavailable(f"another module named {PACKAGE!r} is already imported ({existing!r})")
    _register_markers(folder / PACKAGE)
    try:
        return importlib.import_module(f"{PACKAGE}.{module}")
    except Exception as error:  # an import-time failure of the upstream file (missing optional dependency, ...)
        raise UpstreamUnavailable(f"importing transformers {VERSION}'s tests/{module}.py failed: "
                                  f"{type(error).__name__}: {error}") from error


def load_or_skip(module: str):
    """`load`, turning `UpstreamUnavailable` into a module-level pytest skip that names the reason."""
    import pytest

    try:
        return load(module)
    except UpstreamUnavailable as error:
        pytest.skip(f"transformers' common tests unavailable: {error}", allow_module_level=True)


__all__ = ["TRANSFORMERS_5", "VERSION", "UpstreamUnavailable", "ensure_cache", "load", "load_or_skip"]
