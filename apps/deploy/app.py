"""MONAI Deploy application: UWF-SLO -> late-phase UWF-FA with the LPUWF-LDM bundle model.

Run locally with the SDK's application runner (the app's own command line, as every MONAI Deploy app)::

    python apps/deploy -i <SLO file or folder> -o <output folder> -m <bundle>/models/model_residual.pt

``-m`` may also be the bundle folder. Sampler and writer settings: ``lpuwf_deploy.yaml`` beside this file, or the
YAML file named by the environment variable ``LPUWF_DEPLOY_CONFIG``. The input, output and model paths may also
come from the SDK's environment variables ``HOLOSCAN_INPUT_PATH``, ``HOLOSCAN_OUTPUT_PATH`` and
``HOLOSCAN_MODEL_PATH`` (how a packaged MONAI Application Package is run).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from fa_writer_operator import FAImageWriterOperator
from generate_operator import LPUWFGenerateOperator
from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application
from slo_loader_operator import SLOLoaderOperator

CONFIG_ENV = "LPUWF_DEPLOY_CONFIG"
DEFAULT_CONFIG = Path(__file__).resolve().parent / "lpuwf_deploy.yaml"


class LPUWFDeployApp(Application):
    """Loader (one SLO per tick) -> generator (LPUWF sampler) -> writer (late-phase FA images)."""

    name = "lpuwf_late_phase_fa"
    description = "Generates late-phase UWF fluorescein angiography from UWF-SLO images (LPUWF-LDM)."
    version = "0.1.0"

    def __init__(self, *args, **kwargs) -> None:
        self.writer: FAImageWriterOperator | None = None
        super().__init__(*args, **kwargs)

    def compose(self) -> None:
        app_context: AppContext = Application.init_app_context(self.argv)
        input_path, output_path = Path(app_context.input_path), Path(app_context.output_path)
        if output_path.resolve() == input_path.resolve() or (
            input_path.is_dir() and input_path.resolve() in output_path.resolve().parents
        ):
            raise ValueError(f"the output folder '{output_path}' must lie outside the input '{input_path}'.")
        # the root logger on purpose here and below: the SDK configures it (the console lines of the app)
        logging.info(f"input: {input_path}; output: {output_path}; model: {app_context.model_path}")  # noqa: LOG015

        loader = SLOLoaderOperator(self, input_path=input_path, name="slo_loader")
        loader.add_arg(CountCondition(self, len(loader.inputs)))
        generator = LPUWFGenerateOperator(
            self, model_path=app_context.model_path, name="lpuwf_generator", **self.kwargs("generate")
        )
        self.writer = FAImageWriterOperator(self, output_folder=output_path, name="fa_writer", **self.kwargs("writer"))
        self.add_flow(loader, generator, {("slo", "slo")})
        self.add_flow(generator, self.writer, {("pred", "pred")})


def main(argv: list[str] | None = None) -> int:
    """Run the app; exit status 1 when some inputs produced no image (they are listed), 0 otherwise.

    Args:
        argv: ``[python, script, *args]`` as Holoscan's ``Application`` takes it; default the process's own.
    """
    app = LPUWFDeployApp(argv) if argv else LPUWFDeployApp()
    app.config(os.environ.get(CONFIG_ENV) or str(DEFAULT_CONFIG))
    app.run()
    writer = app.writer
    if writer is None:
        return 1
    for path, reason in writer.failed:
        logging.error(f"no output for {path}: {reason}")  # noqa: LOG015
    logging.info(f"{len(writer.written)} image(s) written, {len(writer.failed)} input(s) failed")  # noqa: LOG015
    return 1 if writer.failed else 0


if __name__ == "__main__":
    sys.exit(main())
