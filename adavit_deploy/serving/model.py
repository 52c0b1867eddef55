"""Triton Python-backend model serving an adavit-deploy bundle (written by ``adavit-deploy triton-repo``).

Each model instance loads one runtime from the bundle beside this file
(sha256 verified), with the budget, precision, threads and backend of
``config.pbtxt``'s parameters. Triton's dynamic batcher hands ``execute`` the
requests it queued; they run as one batch (``adavit_deploy.serving.batch``),
and each request gets its own rows back or its own one-line error.

Needs adavit-deploy and onnxruntime (or TensorRT for ``backend: trt``) in the
Python that runs Triton's backend stub; no torch.
"""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from adavit_deploy import AdaViTDeployError, load_bundle
from adavit_deploy.runtime.backends.ort import use_process_pool
from adavit_deploy.serving.batch import RequestError, run_batch


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config["parameters"].items()}
        bundle = Path(args["model_repository"]) / args["model_version"] / params["bundle"]
        self.mode = params["mode"]
        try:
            if params["backend"] in ("ort", "ort-cuda"):  # this stub process is ours alone
                use_process_pool(int(params["threads"]))
            self.runtime = load_bundle(
                bundle, params["backend"], threads=int(params["threads"]), budget=params["budget"],
                precision=params["precision"],
            )  # fmt: skip
        except AdaViTDeployError as e:
            raise pb_utils.TritonModelException(f"{config['name']}: {e}") from None

    def execute(self, requests):
        images = [pb_utils.get_input_tensor_by_name(r, "images").as_numpy() for r in requests]
        return [self._response(outcome) for outcome in run_batch(self.runtime, images, self.mode)]

    @staticmethod
    def _response(outcome):
        if isinstance(outcome, RequestError):
            code = pb_utils.TritonError.INVALID_ARG if outcome.invalid_argument else pb_utils.TritonError.INTERNAL
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(outcome.message, code))
        return pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in outcome.items()])

    def finalize(self):
        self.runtime.close()  # its ONNX Runtime sessions (or TensorRT contexts and streams)
