"""``bundle/scripts/quickstart.sh`` (the README's main job) runs the tested stage configs with existing keys.

The full script takes minutes; its dry run prints the ``python -m monai.bundle run`` commands (four for the default,
residual method: prior, residual, generation, scoring; six for ``QUICKSTART_METHOD=latent``), which must compose the
same config files as the stage tests run through, in stage order, with the quick start's recipe
(``configs/recipes/cpu.json``) last, and override only keys that the configs define (``monai.bundle`` silently adds
an unknown ``--key``, so a misspelt override would be ignored). The settings each command resolves to:
``test_recipes.py``.
"""

from __future__ import annotations

import ast
import os
import shlex
import subprocess

from monai.bundle import ConfigParser

OWN_ARGS = {"config_file", "meta_file", "logging_file"}
RECIPE = "configs/recipes/cpu.json"


def _run_dry(bundle_dir, root, *extra: str, method: str | None = None) -> subprocess.CompletedProcess:
    """quickstart.sh with QUICKSTART_DRY_RUN (commands printed only) and no other QUICKSTART_ variable of ours."""
    script = bundle_dir / "scripts" / "quickstart.sh"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUICKSTART_")}
    env.update({"QUICKSTART_DRY_RUN": "1", "BUNDLE_ROOT": str(root)})
    if method:
        env["QUICKSTART_METHOD"] = method
    return subprocess.run(["bash", str(script), *extra], env=env, capture_output=True, text=True, timeout=60)


def _dry_run(bundle_dir, root, *extra: str, method: str | None = None) -> list[list[str]]:
    done = _run_dry(bundle_dir, root, *extra, method=method)
    assert done.returncode == 0, done.stderr
    return [shlex.split(line[2:]) for line in done.stdout.splitlines() if line.startswith("+ ")]


def _options(command: list[str]) -> dict[str, str]:
    start = command.index("run") + 1
    args = command[start:]
    if args and not args[0].startswith("--"):
        args = args[1:]  # the run id
    return {args[i][2:]: args[i + 1] for i in range(0, len(args) - 1, 2)}


def _check_known_keys(bundle_dir, commands) -> None:
    for command in commands:
        options = _options(command)
        files = options["config_file"]
        files = ast.literal_eval(files) if files.startswith("[") else [files]
        parser = ConfigParser()
        parser.read_config([str(bundle_dir / f) for f in files])
        unknown = [key for key in options if key not in OWN_ARGS and key not in parser]
        assert not unknown, f"{files}: the script overrides keys the configs do not define: {unknown}"


def test_quickstart_default_trains_the_prior_and_its_residual_then_generates_and_scores(tmp_path, bundle):
    bundle_dir = bundle.BUNDLE_DIR
    commands = _dry_run(bundle_dir, tmp_path, "--seed", "3")
    assert len(commands) == 4
    for command, config in zip(commands[:2], ("train_prior.json", "train_residual.json")):
        assert command[1:5] == ["-m", "monai.bundle", "run", "training"]
        options = _options(command)
        assert ast.literal_eval(options["config_file"]) == ["configs/common.json", f"configs/{config}", RECIPE]
        assert options["seed"] == "3" and options["bundle_root"] == str(tmp_path)
    for command, configs in zip(commands[2:], (["inference.json"], ["inference.json", "evaluate.json"])):
        options = _options(command)
        assert ast.literal_eval(options["config_file"]) == [f"configs/{c}" for c in configs] + [RECIPE]
        assert options["method"] == "residual" and "seed" not in options
    _check_known_keys(bundle_dir, commands)
    assert _dry_run(bundle_dir, tmp_path, method="residual") == _dry_run(bundle_dir, tmp_path)
    done = _run_dry(bundle_dir, tmp_path, method="diffusion")
    assert done.returncode == 2 and "residual (the default) or latent" in done.stderr


def test_quickstart_latent_runs_the_four_stages_then_inference_and_scoring(tmp_path, bundle):
    bundle_dir = bundle.BUNDLE_DIR
    commands = _dry_run(bundle_dir, tmp_path, "--seed", "3", method="latent")
    assert len(commands) == 6
    for command, stage in zip(commands[:4], bundle.STAGES):
        assert command[1:5] == ["-m", "monai.bundle", "run", "training"]
        options = _options(command)
        expected = ["configs/common.json"] + [f"configs/{name}" for name in bundle.STAGE_CONFIGS[stage]] + [RECIPE]
        assert ast.literal_eval(options["config_file"]) == expected, stage  # a list literal, as fire reads it
        assert options["seed"] == "3" and options["bundle_root"] == str(tmp_path)
    inference = _options(commands[4])
    assert ast.literal_eval(inference["config_file"]) == ["configs/inference.json", RECIPE]
    assert "seed" not in inference
    scoring = _options(commands[5])  # the held-out split, each frame drawn twice (same-input correlation)
    assert ast.literal_eval(scoring["config_file"]) == ["configs/inference.json", "configs/evaluate.json", RECIPE]
    assert inference["method"] == scoring["method"] == "latent"
    _check_known_keys(bundle_dir, commands)
