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
from monai_lpuwf.networks import build_model

TOL = 1e-5


@pytest.fixture(scope="module")
def model():
    """The small preset with its zero-initialised parts (SLO encoder, ControlNet zero convs) made non-zero."""
    torch.manual_seed(0)
    m = build_model("small", scale_factor=0.7).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in (m.autoencoder.condition_encoder, m.controlnet):
            for p in module.parameters():
                if float(p.abs().max()) == 0.0:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return m


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
    out, paths = exported
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
            x, _ = scheduler.step(denoiser(x, torch.full((1,), int(t), dtype=torch.long), slo), int(t), x, eta=0.0,
                                  generator=gen)
        got = decoder(x, slo).clamp(-1, 1)
    assert _max_diff(got, expected) < TOL


def test_wrappers_are_the_model_methods(model):
    inputs = example_inputs(model, (32, 32))
    with torch.no_grad():
        torch.testing.assert_close(DenoiserStep(model)(*inputs["denoiser"]), model.denoise(*inputs["denoiser"]))
        torch.testing.assert_close(ConditionalDecoder(model)(*inputs["decoder"]), model.decode_latents(*inputs["decoder"]))


def test_monai_bundle_ckpt_export_cannot_export_these_networks(model, tmp_path):
    """Documented in monai_lpuwf.export: ckpt_export's torch.jit.script fails on MONAI's DiffusionModelUNet and
    ControlNet, and its use_trace mode passes one tensor to networks that take several."""
    from monai.bundle import ckpt_export

    (tmp_path / "configs").mkdir()
    (tmp_path / "models").mkdir()
    torch.save({"model": model.state_dict(), "config": model.config}, tmp_path / "models" / "model.pt")
    config = tmp_path / "configs" / "export.json"
    config.write_text(json.dumps({"network_def": {"_target_": "monai_lpuwf.networks.build_model", "preset": "small"}}))
    common = dict(
        net_id="network_def", filepath=str(tmp_path / "models" / "model.ts"), ckpt_file=str(tmp_path / "models" / "model.pt"),
        config_file=str(config), key_in_ckpt="model", meta_file=str(tmp_path / "configs" / "none.json"),
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


@pytest.mark.skipif(not has_onnx, reason="the onnx package is not installed (optional)")
def test_onnx(model, tmp_path):
    import onnx

    paths = export_onnx(model, tmp_path, image_size=(32, 32))
    for path in paths.values():
        onnx.checker.check_model(onnx.load(str(path)))


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
