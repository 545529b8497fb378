"""The MONAI Label app (apps/monailabel) behind the real ``monailabel start_server``, called over REST on loopback.

Runs in an environment with ``monailabel`` (``.ci/apps.sh`` builds ``.venv-label``); skipped elsewhere. The server
runs with every outbound HTTP(S) request sent to a closed local port (offline use), on a copy of the app folder
(``start_server`` creates ``bin/ lib/ logs/ model/`` inside the app). The returned images are compared with the
library's own generation pipeline on the same model and seed.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "monailabel", reason="monailabel is not installed in this environment (.ci/apps.sh runs these tests in .venv-label)"
)
requests = pytest.importorskip("requests", reason="requests (a monailabel dependency) is needed to call the server")

from PIL import Image  # noqa: E402
from requests_toolbelt.multipart import decoder  # noqa: E402

from monai_lpuwf.data import render_phantom, save_uwf_image  # noqa: E402

APP_DIR = Path(__file__).resolve().parents[2] / "apps" / "monailabel"
MODEL = "lpuwf_late_fa"
STARTUP_TIMEOUT = 180
REQUEST_TIMEOUT = 300
SAMPLER = {"scheduler": "ddim", "num_inference_steps": 1, "seed": 11}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def slo_file(request, tmp_path_factory) -> Path:
    """The real sample val/7.bmp (853 x 682), or a phantom SLO of a non-square size where the samples are absent."""
    try:
        return request.getfixturevalue("uwf_samples_dir") / "val" / "7.bmp"
    except pytest.skip.Exception:
        path = tmp_path_factory.mktemp("slo") / "7.png"
        phantom = render_phantom((150, 200), seed=3)
        return save_uwf_image(phantom["slo"] * 2 - 1, path)  # [0, 1] -> [-1, 1]


@pytest.fixture(scope="module")
def server(demo_model_file, slo_file, tmp_path_factory):
    """``monailabel start_server`` on a free loopback port; yields its base URL and studies folder."""
    work = tmp_path_factory.mktemp("monailabel")
    app = work / "app"
    app.mkdir()
    for name in ("main.py", "generation_task.py"):
        shutil.copy(APP_DIR / name, app / name)
    studies = work / "studies"
    studies.mkdir()
    shutil.copy(slo_file, studies / slo_file.name)
    outside = work / "elsewhere" / f"secret{slo_file.suffix}"  # a readable image on the server, not in the studies
    outside.parent.mkdir()
    shutil.copy(slo_file, outside)
    bin_dir = Path(sys.executable).parent
    launcher = bin_dir / "monailabel"
    if not launcher.is_file():
        pytest.skip(f"no monailabel launcher beside {sys.executable}")
    port = free_port()
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there: any outbound request fails at once
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",  # the launcher runs the `python` on PATH
        "OMP_NUM_THREADS": "2",
        "MONAI_LABEL_SESSION_PATH": str(work / "sessions"),
        **dict.fromkeys(("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"), closed),
        "NO_PROXY": "",
        "no_proxy": "",
    }
    cmd = [
        str(launcher), "start_server", "--app", str(app), "--studies", str(studies),
        "--conf", "model", str(demo_model_file), "--conf", "steps", "1",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with open(work / "server.log", "w") as log:  # the server writes to its own copy of the descriptor
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    log_tail = lambda: (work / "server.log").read_text()[-4000:]  # noqa: E731
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"monailabel exited with {proc.returncode}:\n{log_tail()}")
            try:
                if requests.get(f"{url}/info/", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no answer from {url} in {STARTUP_TIMEOUT} s:\n{log_tail()}")
            time.sleep(1)
        yield {"url": url, "studies": studies, "log": work / "server.log", "outside": outside}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the launcher's process group, started above
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def grey_image(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == "L", f"expected a grey image, got mode {img.mode}"
        return np.asarray(img, dtype=np.float64)


def test_info_lists_the_generation_model(server):
    info = requests.get(f"{server['url']}/info/", timeout=30).json()
    task = info["models"][MODEL]
    assert task["type"] == "generation"
    assert task["config"]["num_inference_steps"] == 1  # --conf steps 1
    assert info["datastore"]["total"] == 1  # the SLO in the studies folder (BMP/PNG are datastore images here)


def test_upload_returns_generated_fa(server, slo_file, demo_model_file, generation_oracle):
    reference, assert_matches = generation_oracle
    with open(slo_file, "rb") as f:
        response = requests.post(
            f"{server['url']}/infer/{MODEL}",
            params={"output": "image"},
            files={"file": (slo_file.name, f)},
            data={"params": json.dumps({"seed": SAMPLER["seed"]})},
            timeout=REQUEST_TIMEOUT,
        )
    assert response.status_code == 200, response.text[:2000]
    assert response.headers["content-type"] == "image/png"
    fa = grey_image(response.content)
    with Image.open(slo_file) as slo:
        assert fa.shape == (slo.height, slo.width)
    expected = reference(demo_model_file, slo_file, **SAMPLER, num_samples=1)["pred"]
    assert_matches(fa, expected, "returned image")
    assert min(np.abs(fa - fa[::-1]).mean(), np.abs(fa - fa[:, ::-1]).mean()) > 5  # orientation is checkable


def test_datastore_image_with_uncertainty(server, slo_file, demo_model_file, generation_oracle):
    """Select the image by its datastore id; ``output=all`` gives the FA image and the JSON with the std map."""
    reference, assert_matches = generation_oracle
    params = {"seed": SAMPLER["seed"], "num_samples": 2, "uncertainty": True}
    response = requests.post(
        f"{server['url']}/infer/{MODEL}",
        params={"image": slo_file.stem, "output": "all"},
        data={"params": json.dumps(params)},
        timeout=REQUEST_TIMEOUT,
    )
    assert response.status_code == 200, response.text[:2000]
    parts = decoder.MultipartDecoder.from_response(response).parts
    by_name = {p.headers[b"Content-Disposition"].decode().split('name="')[1].split('"')[0]: p for p in parts}
    result = json.loads(by_name["params"].content)
    fa = grey_image(by_name["image"].content)
    std = grey_image(base64.b64decode(result["uncertainty"]["data"]))
    expected = reference(demo_model_file, slo_file, **SAMPLER, num_samples=2)
    assert result["shape"] == list(fa.shape) and result["sampler"]["num_samples"] == 2
    assert_matches(fa, expected["pred"], "returned image (mean of 2 samples)")
    assert_matches(std, expected["pred_std"], "uncertainty map")
    assert std.max() > 0
    labels = server["studies"] / "labels"
    assert not any(labels.rglob("*.*")), "a generated image was stored as a label of the SLO"


def test_bad_parameters_are_client_errors(server, slo_file):
    with open(slo_file, "rb") as f:
        response = requests.post(
            f"{server['url']}/infer/{MODEL}",
            files={"file": (slo_file.name, f)},
            data={"params": json.dumps({"uncertainty": True, "num_samples": 1})},
            timeout=REQUEST_TIMEOUT,
        )
    assert response.status_code == 400
    assert "num_samples >= 2" in response.json()["detail"]
    response = requests.post(
        f"{server['url']}/infer/{MODEL}",
        params={"image": slo_file.stem},
        data={"params": json.dumps({"scheduler": "euler", "result_extension": ".gif"})},
        timeout=REQUEST_TIMEOUT,
    )
    assert response.status_code == 400
    assert "scheduler 'euler'" in response.json()["detail"] and "result_extension '.gif'" in response.json()["detail"]


def _infer(server, image: str | None = None, params: dict | None = None, upload: Path | None = None):
    query = {"output": "json", **({"image": image} if image is not None else {})}
    files = {"file": (upload.name, upload.read_bytes())} if upload is not None else None
    return requests.post(
        f"{server['url']}/infer/{MODEL}",
        params=query,
        files=files,
        data={"params": json.dumps({**(params or {}), "num_inference_steps": 1})},
        timeout=REQUEST_TIMEOUT,
    )


def test_server_paths_are_refused(server, slo_file):
    """Only datastore ids and uploads are read: a path on the server (as the id or as params.image, also one inside
    the studies folder, also beside an upload) gets 400 with the app's message, never a generated image."""
    outside = str(server["outside"])
    inside = str(server["studies"] / slo_file.name)
    cases = {
        "absolute path as the id": _infer(server, image=outside),
        "path into the studies as the id": _infer(server, image=inside),
        "relative path as the id": _infer(server, image=f"../elsewhere/{server['outside'].stem}"),
        "params.image beside an id": _infer(server, image=slo_file.stem, params={"image": outside}),
        "params.image beside an upload": _infer(server, params={"image": outside}, upload=slo_file),
    }
    for case, response in cases.items():
        assert response.status_code == 400, f"{case}: HTTP {response.status_code} {response.text[:300]}"
        detail = response.json()["detail"]
        assert "is a path" in detail and "?image=" in detail and "file=@" in detail, f"{case}: {detail}"


def test_unknown_id_is_not_found(server):
    response = _infer(server, image="no-such-slo")
    assert response.status_code == 404, response.text[:300]
    assert "no image 'no-such-slo' in the studies datastore" in response.json()["detail"]


def test_corrupt_upload_gets_the_loader_message(server, tmp_path):
    """An upload the loader cannot read: 400 with the project's message (not a bare 500), naming the upload rather
    than the server's temporary file."""
    broken = tmp_path / "broken.bmp"
    broken.write_bytes(b"BM not really a bitmap")
    response = _infer(server, upload=broken)
    assert response.status_code == 400, response.text[:300]
    detail = response.json()["detail"]
    assert detail.startswith("the uploaded file") and re.search("corrupt|not an image|cannot be read", detail), detail
    assert "lpuwf-label-uploads-" not in detail and "/tmp" not in detail, detail


@pytest.fixture(scope="module")
def label_main():
    """apps/monailabel/main.py as MONAI Label imports it (the app folder on ``sys.path``)."""
    import importlib.util

    sys.path.insert(0, str(APP_DIR))
    try:
        spec = importlib.util.spec_from_file_location("lpuwf_label_main", APP_DIR / "main.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(APP_DIR))


def test_conf_options_set_every_sampling_setting_by_name(label_main):
    conf = {"model": "m.pt", "preload": "true", "steps": "3", "samples": "2", "t_start": "none",
            "flip_average": "true", "eta": "0.5", "scheduler": "ddpm"}  # fmt: skip
    assert label_main.conf_sampling(conf) == {
        "num_inference_steps": 3, "num_samples": 2, "t_start": None, "flip_average": True, "eta": 0.5,
        "scheduler": "ddpm",
    }  # fmt: skip
    assert label_main.conf_sampling({"t_start": "350", "seed": "4"}) == {"t_start": 350, "seed": 4}
    with pytest.raises(ValueError, match="--conf seed 'four'"):
        label_main.conf_sampling({"seed": "four"})


def test_a_bundle_folder_gives_the_main_jobs_model_and_its_inference_config(label_main, demo_model_file, tmp_path):
    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    (bundle / "configs").mkdir()
    (bundle / "configs" / "inference.json").write_text("{}")
    for name in ("model_prior.pt", "model_residual.pt"):
        shutil.copy(demo_model_file, bundle / "models" / name)
    assert label_main.resolve_model(bundle) == (
        bundle / "models" / "model_residual.pt",
        bundle / "configs" / "inference.json",
    )
    assert label_main.resolve_model(tmp_path / "missing") == (tmp_path / "missing", None)  # logged; /infer fails
