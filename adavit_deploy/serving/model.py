"""Triton Python-backend model serving an adavit-deploy bundle (written by ``adavit-deploy triton-repo``).

Each model instance loads one runtime from the bundle beside this file
(sha256 verified), with the budget, precision, threads and backend of
``config.pbtxt``'s parameters. Triton's dynamic batcher hands ``execute`` the
requests it queued; they run as one batch (``adavit_deploy.serving.batch``),
and each request gets its own rows back or its own one-line error. A request
may name its ``budget`` (a request parameter); those that do not get the
model's budget or, with ``slo_ms``, the SLO controller's (``serving/slo.py``),
which sees every batch's timing. The images served per budget, and the
controller's current budget, are Prometheus metrics on Triton's metrics port.

Needs adavit-deploy and onnxruntime (or TensorRT for ``backend: trt``) in the
Python that runs Triton's backend stub; no torch.
"""

import json
import time
from collections import Counter
from pathlib import Path

import triton_python_backend_utils as pb_utils

from adavit_deploy import AdaViTDeployError, load_bundle
from adavit_deploy.runtime.backends.ort import use_process_pool
from adavit_deploy.serving.batch import RequestError, run_batch
from adavit_deploy.serving.slo import SloController, ladder


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
            self.controller = None
            if float(params.get("slo_ms", "0")) > 0:
                delay_us = config.get("dynamic_batching", {}).get("max_queue_delay_microseconds", 0)
                rungs = ladder(self.runtime.manifest, params.get("min_budget") or None)
                self.controller = SloController(rungs, float(params["slo_ms"]), int(config["max_batch_size"]),
                                                int(delay_us) / 1e6)  # fmt: skip
        except AdaViTDeployError as e:
            raise pb_utils.TritonModelException(f"{config['name']}: {e}") from None
        self._metrics(config["name"], args["model_instance_name"])

    def _metrics(self, model, instance):
        # a family must outlive its metrics: both are kept on the instance
        self.families = [pb_utils.MetricFamily(
            name="adavit_images_total", description="Images served, by the budget applied", kind=pb_utils.MetricFamily.COUNTER
        )]  # fmt: skip
        budgets = list(self.runtime.manifest.budgets)
        self.served = {b: self.families[0].Metric(labels={"model": model, "budget": b}) for b in budgets}
        self.current = {}
        if self.controller is not None:
            self.families.append(pb_utils.MetricFamily(
                name="adavit_slo_budget",
                description="1 for the budget the SLO controller gives requests without one, else 0",
                kind=pb_utils.MetricFamily.GAUGE,
            ))
            self.current = {r.budget: self.families[1].Metric(labels={"model": model, "instance": instance, "budget": r.budget})
                            for r in self.controller.rungs}  # fmt: skip
            self._show_budget()

    def _show_budget(self):
        for budget, gauge in self.current.items():
            gauge.set(1.0 if budget == self.controller.budget else 0.0)

    def execute(self, requests):
        start = time.monotonic()
        images = [pb_utils.get_input_tensor_by_name(r, "images").as_numpy() for r in requests]
        budgets = [self._budget(r) for r in requests]
        default = self.controller.budget if self.controller is not None else None
        outcomes = run_batch(self.runtime, images, self.mode, budgets, default)
        if self.mode == "adaptive":
            applied = Counter(b for o in outcomes if not isinstance(o, RequestError) for b in o["budget"][:, 0])
            for budget, count in applied.items():
                self.served[budget.decode()].increment(count)
        if self.controller is not None:
            before = self.controller.budget
            self.controller.observe(start, time.monotonic(), sum(len(x) for x in images))
            if self.controller.budget != before:
                self._show_budget()
        return [self._response(outcome) for outcome in outcomes]

    @staticmethod
    def _budget(request):
        """The request's ``budget`` parameter, or None."""
        try:
            return json.loads(request.parameters() or "{}").get("budget")
        except (ValueError, AttributeError):
            return None

    @staticmethod
    def _response(outcome):
        if isinstance(outcome, RequestError):
            code = pb_utils.TritonError.INVALID_ARG if outcome.invalid_argument else pb_utils.TritonError.INTERNAL
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(outcome.message, code))
        return pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in outcome.items()])

    def finalize(self):
        self.runtime.close()  # its ONNX Runtime sessions (or TensorRT contexts and streams)
