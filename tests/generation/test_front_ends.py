"""Issue 21: the three front-ends of generation (the bundle's ``inference.json``, the MONAI Label task, the MONAI
Deploy operator) run the same pipeline at the model file's recommended sampling settings.

A quick-start-like model file (the apps' tiny demo model, ``apps/demo_model.py``) that records a recommended control
strength of 2.0 (``conditioning_scale``, as the quick start samples its model) goes through

* the bundle: ``monai.bundle.run`` of ``inference.json`` (float32 NIfTI output, read back),
* the MONAI Label task: :class:`LateFAGenerationTask` driven as MONAI Label's ``BasicInferTask.__call__`` drives it
  (pre-transforms, ``run_inferer``, post-transforms, writer),
* the MONAI Deploy operator: :meth:`LPUWFGenerateOperator.start` and ``compute``,

and each must give the same pixels (max abs difference < 1e-5, same device and seed) as the library's sampler
called directly at strength 2.0, and must have sampled with ``conditioning_scale == 2.0``.

MONAI Label, FastAPI and the MONAI Deploy SDK are not installed in the default test environment
(``tests/apps`` run the real servers in ``.ci/apps.sh``'s environments); here their few base classes are replaced
by stand-ins that drive the app classes the way the frameworks do.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch

from monai_lpuwf.data import generate_phantoms

REPO_ROOT = Path(__file__).resolve().parents[2]
APPS_DIR = REPO_ROOT / "apps"
STEPS = 2
SEED = 3
RECOMMENDED = {"conditioning_scale": 2.0}

pytestmark = pytest.mark.filterwarnings("ignore:parsing config_file")


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class _HTTPError(Exception):
    def __init__(self, status_code: int, detail: str = "") -> None:
        super().__init__(detail)
        self.status_code, self.detail = status_code, detail


class _BasicInferTask:
    """Stand-in for ``monailabel.tasks.infer.basic_infer.BasicInferTask``: its attributes and the order of its
    ``__call__`` (config + request, pre-transforms, ``run_inferer`` on ``data[input_key][None]`` under
    ``torch.no_grad``, post-transforms, writer)."""

    def __init__(self, path, network, type, labels, dimension, description, input_key="image",
                 output_label_key="pred", config=None, preload=False, **kwargs):  # fmt: skip
        self.path = [] if not path else [path] if isinstance(path, str) else path
        self.network, self.type, self.labels, self.dimension = network, type, labels, dimension
        self.description, self.input_key, self.output_label_key = description, input_key, output_label_key
        self._config = dict(config or {})
        self._networks: dict = {}

    def config(self):
        return self._config

    def get_path(self):
        return next((p for p in self.path if Path(p).exists()), None)

    def run_pre_transforms(self, data, transforms):
        for t in transforms:
            data = t(data)
        return data

    def run_inferer(self, data, convert_to_batch=True, device="cpu"):
        inferer = self.inferer(data)
        network = self._get_network(device, data)
        inputs = data[self.input_key][None].to(torch.device(device))
        with torch.no_grad():
            outputs = inferer(inputs, network)
        data[self.output_label_key] = outputs[0]
        return data

    def __call__(self, request, callbacks=None):
        req = {**self._config, **request}
        req.setdefault("device", "cpu")
        data = {**req, "image_path": req.get("image")}
        data = self.run_pre_transforms(data, self.pre_transforms(data))
        data = self.run_inferer(data, device=req["device"])
        for t in self.post_transforms(data):
            data = t(data)
        return self.writer(data)


class _Operator:
    def __init__(self, fragment, *args, **kwargs) -> None:
        self.fragment = fragment


class _Port:
    def __init__(self, item=None) -> None:
        self.item, self.emitted = item, []

    def receive(self, name):
        return self.item

    def emit(self, item, name):
        self.emitted.append(item)


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    """The MONAI Label task and MONAI Deploy operator modules, imported with the frameworks' stand-ins."""
    stubs = {
        "fastapi": types.SimpleNamespace(HTTPException=_HTTPError),
        "monailabel": types.ModuleType("monailabel"),
        "monailabel.tasks": types.ModuleType("monailabel.tasks"),
        "monailabel.tasks.infer": types.ModuleType("monailabel.tasks.infer"),
        "monailabel.tasks.infer.basic_infer": types.SimpleNamespace(BasicInferTask=_BasicInferTask),
        "monailabel.utils": types.ModuleType("monailabel.utils"),
        "monailabel.utils.others": types.ModuleType("monailabel.utils.others"),
        "monailabel.utils.others.generic": types.SimpleNamespace(
            strtobool=lambda s: str(s).lower() in ("1", "true", "yes", "y", "on", "t")
        ),
        "monai.deploy": types.ModuleType("monai.deploy"),
        "monai.deploy.core": types.SimpleNamespace(Fragment=object, Operator=_Operator, OperatorSpec=object),
    }
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)  # type: ignore[arg-type]
    try:
        label = _load(APPS_DIR / "monailabel" / "generation_task.py", "lpuwf_label_generation_task")
        deploy = _load(APPS_DIR / "deploy" / "generate_operator.py", "lpuwf_deploy_generate_operator")
        yield types.SimpleNamespace(label=label, deploy=deploy)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """The apps' demo model saved as the bundle saves ``models/model.pt``, with a recommended control strength."""
    demo = _load(APPS_DIR / "demo_model.py", "lpuwf_demo_model_front_ends")
    model = demo.build_demo_model()
    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.save({"model": model.state_dict(), "config": model.config, "sampling": dict(RECOMMENDED)}, path)
    return path


@pytest.fixture(scope="module")
def slo_file(tmp_path_factory) -> Path:
    """One 70 x 90 (H x W) phantom SLO: padded to 96 x 96 by the inference transforms, cropped back after."""
    root = tmp_path_factory.mktemp("slo")
    generate_phantoms(root / "all", num=1, size=(70, 90), seed=0)
    (root / "in").mkdir()
    shutil.copy(root / "all" / "1.png", root / "in" / "1.png")
    return root / "in" / "1.png"


@pytest.fixture
def strengths(monkeypatch) -> list[float]:
    """The ``conditioning_scale`` of every denoiser call."""
    from monai_lpuwf.networks import LPUWFModel

    seen: list[float] = []
    denoise = LPUWFModel.denoise

    def recording(self, x_t, timesteps, slo, conditioning_scale: float = 1.0):
        seen.append(float(conditioning_scale))
        return denoise(self, x_t, timesteps, slo, conditioning_scale=conditioning_scale)

    monkeypatch.setattr(LPUWFModel, "denoise", recording)
    return seen


def _direct(model_file: Path, slo_file: Path, conditioning_scale: float) -> torch.Tensor:
    """The library's sampler called directly on the padded SLO, cropped back: (1, 70, 90) in [-1, 1]."""
    from monai_lpuwf.inferers import LPUWFSampler
    from monai_lpuwf.networks import ModelFile
    from monai_lpuwf.transforms import uwf_inference_transforms

    model = ModelFile.load(model_file).build().eval()
    slo = uwf_inference_transforms(divisor=model.size_divisor, sharpen=True)({"slo": str(slo_file)})["slo"]
    sampler = LPUWFSampler("ddim", num_inference_steps=STEPS, seed=SEED, conditioning_scale=conditioning_scale)
    with torch.no_grad():
        pred = sampler(slo.as_tensor()[None], model)["pred"]
    return pred[0, :, 13:83, 3:93]  # 70 x 90 padded to 96 x 96: 13 rows and 3 columns before


def _bundle(model_file: Path, slo_file: Path, tmp_path: Path) -> torch.Tensor:
    from monai.bundle import run

    from monai_lpuwf.transforms import LoadUWFImage

    root = tmp_path / "bundle"
    shutil.copytree(REPO_ROOT / "bundle" / "configs", root / "configs")
    out = tmp_path / "out"
    run(config_file=str(root / "configs" / "inference.json"), bundle_root=str(root), model_path=str(model_file),
        input_dir=str(slo_file.parent), output_dir=str(out), output_ext=".nii.gz", output_dtype="float32",
        num_inference_steps=STEPS, seed=SEED, num_threads=torch.get_num_threads(), step_progress=False)  # fmt: skip
    return LoadUWFImage("fa")(out / "1_late.nii.gz").as_tensor()


def _label(apps, model_file: Path, slo_file: Path) -> tuple[torch.Tensor, dict]:
    task = apps.label.LateFAGenerationTask(model_file, num_inference_steps=STEPS, seed=SEED)
    seen = {}
    write = task.writer

    def writer(data, extension=None, dtype=None):
        seen["pred"] = torch.as_tensor(data["pred"]).detach().cpu().float()
        return write(data, extension, dtype)

    task.writer = writer
    path, result = task({"image": str(slo_file), "device": "cpu"})
    Path(path).unlink()
    return seen["pred"], result


def _deploy(apps, model_file: Path, slo_file: Path) -> torch.Tensor:
    operator = apps.deploy.LPUWFGenerateOperator(
        object(), model_path=model_file, num_inference_steps=STEPS, seed=SEED, device="cpu"
    )
    operator.start()
    port = _Port({"name": "1", "path": str(slo_file)})
    operator.compute(port, port, None)
    (item,) = port.emitted
    assert "error" not in item, item.get("error")
    return item["pred"].float()


def test_the_three_front_ends_give_the_same_pixels_at_the_recommended_strength(
    apps, model_file, slo_file, strengths, tmp_path
):
    expected = _direct(model_file, slo_file, RECOMMENDED["conditioning_scale"])
    assert (expected - _direct(model_file, slo_file, 1.0)).abs().max() > 1e-3  # the strength changes the image
    strengths.clear()

    outputs = {}
    used = {}
    outputs["bundle"] = _bundle(model_file, slo_file, tmp_path)
    used["bundle"], strengths[:] = set(strengths), []
    outputs["monai label"], result = _label(apps, model_file, slo_file)
    used["monai label"], strengths[:] = set(strengths), []
    outputs["monai deploy"] = _deploy(apps, model_file, slo_file)
    used["monai deploy"] = set(strengths)

    assert used == {name: {RECOMMENDED["conditioning_scale"]} for name in outputs}, "control strength used"
    for name, pred in outputs.items():
        assert tuple(pred.shape) == (1, 70, 90), name
        assert (pred - expected).abs().max() < 1e-5, f"{name}: pixels differ from the sampler at strength 2.0"
    assert result["sampler"]["conditioning_scale"] == RECOMMENDED["conditioning_scale"]
    assert result["sampler"]["num_inference_steps"] == STEPS and result["sampler"]["seed"] == SEED


def test_the_apps_take_sampling_settings_by_name_and_a_bundle_folder(apps, model_file, tmp_path):
    """Both apps read the sampling settings as keywords (INFERENCE_DEFAULTS' names; anything else is refused by
    MONAI Label's task, passed on to the SDK's Operator by Deploy's) and find the model file in a bundle folder."""
    from monai_lpuwf.inferers import INFERENCE_DEFAULTS

    task = apps.label.LateFAGenerationTask(model_file, t_start=350, flip_average=True, scheduler="DDIM")
    assert set(INFERENCE_DEFAULTS) <= set(task.config())
    assert (task.config()["t_start"], task.config()["flip_average"], task.config()["scheduler"]) == (350, True, "ddim")
    with pytest.raises(TypeError, match=r"\['num_steps'\] are not sampling settings"):
        apps.label.LateFAGenerationTask(model_file, num_steps=3)
    with pytest.raises(ValueError, match="scheduler 'euler' is not one of"):
        apps.label.LateFAGenerationTask(model_file, scheduler="euler")
    bundle_root = tmp_path / "bundle"
    (bundle_root / "models").mkdir(parents=True)
    shutil.copy(model_file, bundle_root / "models" / "model_residual.pt")
    operator = apps.deploy.LPUWFGenerateOperator(object(), model_path=bundle_root, flip_average=True, name="gen")
    assert operator.model_file == bundle_root / "models" / "model_residual.pt"
    assert operator.settings == {"flip_average": True}  # "name" went to the Operator, not to the sampler
