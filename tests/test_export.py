"""TorchScript export of the denoiser and the decoder: same outputs as eager PyTorch, reloadable, and why
``python -m monai.bundle ckpt_export`` cannot do it."""

from __future__ import annotations

import json

import pytest
import torch

from monai_lpuwf.export import (
    ConditionalDecoder,
    DenoiserStep,
    example_inputs,
    export_onnx,
    export_torchscript,
    has_onnx,
    load_torchscript,
    main,
)
from monai_lpuwf.inferers import LPUWFSampler, build_scheduler
from monai_lpuwf.networks.tiny import TINY_OVERRIDES, build_tiny_model

TOL = 1e-5


@pytest.fixture(scope="module")
def model():
    """The shared tiny model with its zero-initialised SLO path (SLO encoder, ControlNet, U-Net output) random, so
    that both exported networks have non-trivial outputs that depend on every input."""
    return build_tiny_model(0, weight_seed=1, scale_factor=0.7)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    return out, export_torchscript(model, out, image_size=(64, 64))


def _max_diff(a, b):
    return float((a - b).abs().max())


def test_traced_equals_eager_and_reloads(model, exported):
    out, paths = exported
    assert {k: p.name for k, p in paths.items()} == {"denoiser": "denoiser.ts", "decoder": "decoder.ts"}
    denoiser, decoder = load_torchscript(out)  # reloading the saved .ts files
    assert isinstance(denoiser, torch.jit.ScriptModule) and isinstance(decoder, torch.jit.ScriptModule)
    for size, batch in [((64, 64), 1), ((96, 64), 2)]:  # the example size, and another size and batch
        inputs = example_inputs(model, size, batch_size=batch)
        with torch.no_grad():
            x_t, t, slo = inputs["denoiser"]
            eps = denoiser(x_t, t, slo)
            assert eps.shape == x_t.shape
            assert _max_diff(eps, model.denoise(x_t, t, slo)) < TOL
            z, slo = inputs["decoder"]
            image = decoder(z, slo)
            assert image.shape == (batch, 1, *size)
            assert _max_diff(image, model.decode_latents(z, slo)) < TOL
            assert _max_diff(image, model.decode_latents(z, None)) > 1e-4  # the SLO features are in the export


def test_extra_files_hold_config_and_input_shapes(model, exported):
    _, paths = exported
    extra = {"config.json": "", "inputs.json": ""}
    torch.jit.load(str(paths["denoiser"]), _extra_files=extra)
    assert json.loads(extra["config.json"])["unet"]["channels"] == list(model.config["unet"]["channels"])
    assert json.loads(extra["inputs.json"]) == {"x_t": [1, 4, 16, 16], "timesteps": [1], "slo": [1, 3, 64, 64]}


def test_generation_with_the_exported_files_matches_the_sampler(model, exported):
    """A DDIM loop written with the two exported files gives the sampler's images."""
    denoiser, decoder = load_torchscript(exported[0])
    slo = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    expected = LPUWFSampler("ddim", num_inference_steps=3, seed=5)(slo, model)["pred"]
    scheduler = build_scheduler("ddim", model.schedule)
    scheduler.set_timesteps(3)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn((1, 4, 16, 16), generator=gen)
    with torch.no_grad():
        for t in scheduler.timesteps:
            x, _ = scheduler.step(
                denoiser(x, torch.full((1,), int(t), dtype=torch.long), slo), int(t), x, eta=0.0, generator=gen
            )
        got = decoder(x, slo).clamp(-1, 1)
    assert _max_diff(got, expected) < TOL


def test_wrappers_are_the_model_methods(model):
    inputs = example_inputs(model, (32, 32))
    with torch.no_grad():
        torch.testing.assert_close(DenoiserStep(model)(*inputs["denoiser"]), model.denoise(*inputs["denoiser"]))
        torch.testing.assert_close(
            ConditionalDecoder(model)(*inputs["decoder"]), model.decode_latents(*inputs["decoder"])
        )


def test_monai_bundle_ckpt_export_cannot_export_these_networks(model, tmp_path):
    """Documented in monai_lpuwf.export: ckpt_export's torch.jit.script fails on MONAI's DiffusionModelUNet and
    ControlNet, and its use_trace mode passes one tensor to networks that take several."""
    from monai.bundle import ckpt_export

    (tmp_path / "configs").mkdir()
    (tmp_path / "models").mkdir()
    torch.save({"model": model.state_dict(), "config": model.config}, tmp_path / "models" / "model.pt")
    config = tmp_path / "configs" / "export.json"
    network_def = {"_target_": "monai_lpuwf.networks.build_model", "preset": "small", **TINY_OVERRIDES}
    config.write_text(json.dumps({"network_def": network_def}))
    common = dict(
        net_id="network_def",
        filepath=str(tmp_path / "models" / "model.ts"),
        ckpt_file=str(tmp_path / "models" / "model.pt"),
        config_file=str(config),
        key_in_ckpt="model",
        meta_file=str(tmp_path / "configs" / "none.json"),
    )
    with pytest.raises(RuntimeError, match="cannot statically infer"):
        ckpt_export(**common)
    with pytest.raises(TypeError, match="missing 2 required positional arguments"):
        ckpt_export(use_trace=True, input_shape=[1, 4, 16, 16], **common)
    assert not (tmp_path / "models" / "model.ts").exists()


def test_command_line(model, tmp_path):
    ckpt = tmp_path / "model.pt"
    torch.save({"model": model.state_dict(), "config": model.config}, ckpt)
    paths = main(["--checkpoint", str(ckpt), "--output_dir", str(tmp_path / "ts"), "--size", "32", "32"])
    denoiser, _ = load_torchscript(tmp_path / "ts")
    assert paths["torchscript"]["denoiser"].is_file()
    inputs = example_inputs(model, (32, 32))["denoiser"]
    with torch.no_grad():
        assert _max_diff(denoiser(*inputs), model.denoise(*inputs)) < TOL


@pytest.fixture(scope="module")
def onnx_files(model, tmp_path_factory):
    """``denoiser.onnx`` and ``decoder.onnx`` of the model at 32 x 32 (exported once for the ONNX tests)."""
    if not has_onnx:
        pytest.skip("the onnx package is not installed (optional; pip install -e '.[test]')")
    return export_onnx(model, tmp_path_factory.mktemp("onnx"), image_size=(32, 32))


def test_onnx(onnx_files):
    import onnx

    for path in onnx_files.values():
        onnx.checker.check_model(onnx.load(str(path)))


# float32 on both sides; onnxruntime fuses and reorders operations: measured max |diff| 4.8e-7 (denoiser, outputs up
# to 1.1) and 2.3e-6 (decoder, outputs up to 2.6) with onnxruntime 1.32 on CPU
ORT_TOL = 1e-4


def test_onnx_outputs_match_eager_with_onnxruntime(model, onnx_files):
    """The exported graphs run with onnxruntime give the eager outputs (denoiser and decoder, the export size)."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[test]')")
    g = torch.Generator().manual_seed(2)
    slo = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    x_t, z = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    t = torch.tensor([317], dtype=torch.long)
    with torch.no_grad():
        eps, image = model.denoise(x_t, t, slo), model.decode_latents(z, slo)
    runs = {
        "denoiser": ({"x_t": x_t, "timesteps": t, "slo": slo}, eps),
        "decoder": ({"z_scaled": z, "slo": slo}, image),
    }
    for key, (inputs, expected) in runs.items():
        session = ort.InferenceSession(str(onnx_files[key]), providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}
        (got,) = session.run(None, {k: v.numpy() for k, v in inputs.items() if k in names})
        assert got.shape == tuple(expected.shape), key
        assert float(expected.abs().max()) > 1e-2, key  # a non-trivial output
        assert _max_diff(torch.from_numpy(got), expected) < ORT_TOL, key


def test_errors(model, tmp_path):
    with pytest.raises(TypeError, match="LPUWFModel"):
        export_torchscript(torch.nn.Linear(2, 2), tmp_path)
    with pytest.raises(ValueError, match="multiple of the model's size divisor 32"):
        example_inputs(model, (50, 64))
    with pytest.raises(FileNotFoundError, match="export_torchscript"):
        load_torchscript(tmp_path / "nothing")
    if not has_onnx:
        with pytest.raises(Exception, match="pip install onnx"):
            export_onnx(model, tmp_path)
