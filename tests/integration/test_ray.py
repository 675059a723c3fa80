"""On a local Ray instance that the tests start and stop (the `ray` extra; `python -m pytest -m ray`): bulk captioning
with Ray Data writes what `centerfocus caption --dataset` writes, and the Ray Serve endpoint answers concurrent HTTP
clients with `generate()`'s captions, refuses bad requests with a 4xx and keeps serving."""

import concurrent.futures
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

from centerfocus import CenterFocusForConditionalGeneration, CenterFocusProcessor
from centerfocus.tools import caption as caption_command
from centerfocus.tools.caption_data import load_image_dataset
from centerfocus.tools.streaming import write_shards

from ..conftest import write_image_folder


pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray", reason="needs the ray extra: pip install -e '.[ray]'")

NUM_IMAGES = 12


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    from ray import serve

    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("ray") / "images", NUM_IMAGES, first_seed=200)


@pytest.fixture(scope="module")
def generate_captions(saved_folder, image_folder) -> dict[str, str]:
    """generate() on each image alone: what every path must give."""
    model = CenterFocusForConditionalGeneration.from_pretrained(saved_folder).eval()
    processor = CenterFocusProcessor.from_pretrained(saved_folder)
    captions = {}
    for path in sorted(image_folder.glob("*.png")):
        with torch.no_grad():
            tokens = model.generate(**processor(images=[Image.open(path)]))
        captions[path.name] = processor.batch_decode(tokens, skip_special_tokens=True)[0].strip()
    assert len(set(captions.values())) > 1  # varied: the comparisons are not of constants
    return captions


def test_ray_data_captions_the_shards_as_the_bulk_command_does(local_ray, saved_folder, image_folder,
                                                               generate_captions, tmp_path):
    import pyarrow.parquet as pq

    from centerfocus.tools.ray_jobs import caption_with_ray

    write_shards(load_image_dataset(str(image_folder))["train"], tmp_path / "shards", "train", num_shards=3)
    count = caption_with_ray(str(saved_folder), str(tmp_path / "shards"), str(tmp_path / "ray_out"), batch_size=4)
    assert count == NUM_IMAGES
    rows = pq.read_table(tmp_path / "ray_out").to_pylist()
    assert {r["source"]: r["caption"] for r in rows} == generate_captions
    assert all(r["error"] is None for r in rows)
    caption_command.caption_main(["--model", str(saved_folder), "--dataset", str(tmp_path / "shards"), "--output",
                                  str(tmp_path / "bulk.parquet"), "--batch_size", "4"])
    bulk = pq.read_table(tmp_path / "bulk.parquet").to_pylist()
    assert {r["source"]: r["caption"] for r in bulk} == {r["source"]: r["caption"] for r in rows}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint(local_ray, saved_folder) -> str:
    from centerfocus.tools import serving

    port = _free_port()
    serving.start(str(saved_folder), host="127.0.0.1", port=port, max_batch_size=8, batch_wait_ms=50,
                  max_request_mb=0.05, max_image_pixels=200 * 200)
    return f"http://127.0.0.1:{port}"


def _request(url: str, body=None, method="POST") -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_concurrent_clients_get_generates_captions(endpoint, image_folder, generate_captions):
    paths = sorted(image_folder.glob("*.png"))
    with concurrent.futures.ThreadPoolExecutor(len(paths)) as pool:
        answers = list(pool.map(lambda p: _request(f"{endpoint}/caption", p.read_bytes()), paths))
    assert [status for status, _ in answers] == [200] * len(paths)
    assert {p.name: answer["caption"] for p, (_, answer) in zip(paths, answers)} == generate_captions


def test_bad_requests_get_a_4xx_and_the_server_keeps_serving(endpoint, image_folder, generate_captions, tmp_path):
    import io

    huge = io.BytesIO()
    Image.new("RGB", (300, 300)).save(huge, format="PNG")  # small file, 90,000 pixels: over the 40,000 allowed
    cases = [(b"", 400, "empty"), (b"GIF89a but not really", 400, "not a readable image"),
             (huge.getvalue(), 413, "pixels"), (b"x" * 60_000, 413, "over 52428 bytes")]
    for body, status, message in cases:
        code, answer = _request(f"{endpoint}/caption", body)
        assert code == status and message in answer["error"], (code, answer)
    assert _request(f"{endpoint}/caption", method="GET")[0] == 405
    assert _request(f"{endpoint}/elsewhere", b"x")[0] == 404
    status, health = _request(f"{endpoint}/health", method="GET")
    assert status == 200 and health["status"] == "ok"
    path = sorted(image_folder.glob("*.png"))[3]
    assert _request(f"{endpoint}/caption", path.read_bytes()) == (200, {"caption": generate_captions[path.name]})
