"""``classes``: the top-k of logits as probabilities, and class names without timm's ImageNet list."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from adavit_deploy.classes import class_names, top_k


def test_top_k_is_softmax_most_probable_first():
    logits = np.array([[0.0, np.log(3.0), np.log(6.0)], [1000.0, 0.0, 1000.0 - np.log(3.0)]], np.float32)  # large: no overflow
    top, probs = top_k(logits, 2)
    assert top.tolist() == [[2, 1], [0, 2]]
    np.testing.assert_allclose(probs, [[0.6, 0.3], [0.75, 0.25]], rtol=1e-4)  # float32 spacing at 1000: 6e-5
    top, probs = top_k(logits, 5)  # k above the class count: every class
    assert top.shape == probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)


def test_names_are_indices_below_imagenet_size():
    assert class_names(10)(np.int64(3)) == "class 3"


def test_imagenet_names_come_from_timm_without_importing_it():
    pytest.importorskip("timm")
    code = ("import sys; from adavit_deploy.classes import class_names; name = class_names(1000); "
            "print(name(0), '|', name(1), '|', name(999), '|', 'timm' in sys.modules, 'torch' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    want = [info.index_to_description(i).split(",")[0] for i in (0, 1, 999)]
    assert out == f"{want[0]} | {want[1]} | {want[2]} | False False" and want[1] == "goldfish"
