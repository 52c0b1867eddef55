"""Shared fixtures: the reference fixtures in ../shared, random checkpoints, timm twins.

Everything reusable across test files lives here, as fixtures (tests never
import this module; plain helpers are in ``random_models.py`` and ``checks.py``).
Exported bundles are session-scoped and read-only: a test that changes one
copies it first.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import pytest
import torch
from random_models import SMALL_ARCH, T2T_SMALL_ARCH, build_random_model
from torch import nn

from adavit_deploy.config import AdaViTConfig
from adavit_deploy.model import AdaViT, save_checkpoint

#: The reference implementation's own checkpoints + outputs (../shared/fixtures/README.md).
FIXTURE_NAMES = (
    "tiny_full",
    "tiny_attn_tokens_normpolicy",
    "tiny_heads_only",
    "t2t_tiny_performer_full",
    "t2t_tiny_transformer_heads_tokens_normpolicy",
)

SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"

# The test models are tiny: one intra-op thread is as fast, and on a shared
# 2-core machine torch's spinning thread pool makes the suite 4x slower under
# any other load. An explicit OMP_NUM_THREADS still wins.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED_DIR


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """``../shared/fixtures`` beside the repository; skips where it is not checked out."""
    path = SHARED_DIR / "fixtures"
    if not path.is_dir():
        pytest.skip("../shared/fixtures not present (only CI and developers have it)")
    return path


@dataclass(frozen=True)
class ReferenceCase:
    """One reference fixture: checkpoint path and the reference's eval outputs."""

    name: str
    checkpoint: Path
    images: np.ndarray  # (8, 3, 64, 64) float32, normalised (96 x 96 for t2t_tiny_performer_full)
    logits: np.ndarray  # (8, 10)
    decisions: dict[str, np.ndarray]  # head_select / layer_select / token_select, where present


def _load_case(fixtures_dir: Path, name: str) -> ReferenceCase:
    with np.load(fixtures_dir / f"{name}.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return ReferenceCase(
        name=name,
        checkpoint=fixtures_dir / f"{name}.pth.tar",
        images=arrays.pop("images"),
        logits=arrays.pop("logits"),
        decisions=arrays,
    )


@pytest.fixture(params=FIXTURE_NAMES)
def fixture_name(request: pytest.FixtureRequest) -> str:
    """Each of the reference fixtures in turn (DeiT and T2T-ViT families)."""
    return request.param


@pytest.fixture
def reference_case(fixtures_dir: Path, fixture_name: str) -> ReferenceCase:
    """Each reference fixture in turn, loaded (checkpoint path + npz arrays)."""
    return _load_case(fixtures_dir, fixture_name)


@pytest.fixture(scope="session")
def load_reference_case(fixtures_dir: Path) -> Callable[[str], ReferenceCase]:
    """``load_reference_case(name)`` for a test that needs one particular fixture."""
    return partial(_load_case, fixtures_dir)


# -- random models ---------------------------------------------------------------


@pytest.fixture
def make_model() -> Callable[..., AdaViT]:
    """``make_model(seed=0, spread=True, **config_kwargs)``: a small random eval-mode AdaViT.

    ``config_kwargs`` go to ``AdaViTConfig.from_flags`` over ``SMALL_ARCH``
    (e.g. ``ada_token=False``, ``keep_layers=2``, ``norm_policy=True``).
    ``spread`` calibrates the decision heads so decisions vary per input.
    """
    return build_random_model


@pytest.fixture
def make_checkpoint(tmp_path: Path) -> Callable[..., Path]:
    """``make_checkpoint([directory], name=..., seed=0, **config_kwargs)`` -> path of a saved random AdaViT.

    Written by ``save_checkpoint`` in the reference format; ``directory``
    defaults to the test's ``tmp_path``.
    """

    def make(directory: Path | None = None, *, name: str = "random.pth.tar", seed: int = 0, spread: bool = True, **config_kwargs: Any) -> Path:
        path = Path(directory or tmp_path) / name
        save_checkpoint(build_random_model(seed, spread, **config_kwargs), path)
        return path

    return make


# -- timm twins --------------------------------------------------------------------


def build_timm_vit(cfg: AdaViTConfig) -> nn.Module:
    """A plain timm ViT with ``cfg``'s dimensions (DeiT settings), eval mode."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        in_chans=cfg.in_chans,
        num_classes=cfg.num_classes,
        global_pool="token",
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_hidden / cfg.embed_dim,
        qkv_bias=cfg.qkv_bias,
        class_token=True,
        norm_layer=partial(nn.LayerNorm, eps=cfg.eps),
    ).eval()


def to_timm_state(state_dict: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """Reference layout -> timm: fuse query/key/value into ``qkv``, drop the decision heads."""
    out = {}
    for key, value in state_dict.items():
        if any(part in key for part in ("select", "norm_policy", ".attn.query.", ".attn.key.", ".attn.value.")):
            continue
        out[key] = value
    for i in range(depth):
        for kind in ("weight", "bias"):
            parts = [state_dict[f"blocks.{i}.attn.{n}.{kind}"] for n in ("query", "key", "value")]
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(parts, dim=0)
    return out


@pytest.fixture
def timm_twin() -> Callable[[AdaViT], nn.Module]:
    """``timm_twin(model)``: the timm ViT holding ``model``'s weights (strict load)."""

    def twin(model: AdaViT) -> nn.Module:
        vit = build_timm_vit(model.cfg)
        vit.load_state_dict(to_timm_state(model.state_dict(), model.cfg.depth), strict=True)
        return vit

    return twin


@pytest.fixture
def make_timm_vit() -> Callable[..., nn.Module]:
    """``make_timm_vit(seed=0, **arch)``: a random dense timm ViT (``SMALL_ARCH`` by default)."""

    def make(seed: int = 0, **arch: Any) -> nn.Module:
        torch.manual_seed(seed)
        cfg = AdaViTConfig(**{**SMALL_ARCH, **arch})
        vit = build_timm_vit(cfg)
        # timm zero-inits biases and the head: randomise everything so a wrong split shows
        with torch.no_grad():
            for name, p in vit.named_parameters():
                if name.endswith("bias") or name.startswith("head."):
                    p.normal_(0, 0.05)
        return vit

    return make


@pytest.fixture
def images() -> Callable[..., torch.Tensor]:
    """``images(cfg, batch=4, seed=0)``: a seeded random batch for ``cfg``."""

    def make(cfg: AdaViTConfig, batch: int = 4, seed: int = 0) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(batch, cfg.in_chans, cfg.img_size, cfg.img_size, generator=gen)

    return make


@pytest.fixture(scope="session")
def half_gmacs_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Ada-DeiT (3 blocks, 17 tokens, 3 heads) at ~50% GMACs, max batch 4: token buckets and head sets vary."""
    from adavit_deploy.export import export_bundle
    from adavit_deploy.synthetic import random_checkpoint

    cfg = AdaViTConfig.from_flags(**SMALL_ARCH)
    d = tmp_path_factory.mktemp("half-gmacs")
    return export_bundle(random_checkpoint(cfg, d / "random.pth"), d / "bundle", max_batch=4)


@pytest.fixture(scope="session")
def budgets_bundle(half_gmacs_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``half_gmacs_bundle``'s model with budgets native, 0.35 and 0.25, calibrated on 32 seeded images."""
    from adavit_deploy.bundle import read_manifest
    from adavit_deploy.calibrate import calibrate_bundle

    d = tmp_path_factory.mktemp("budgets")
    bundle = Path(shutil.copytree(half_gmacs_bundle, d / "bundle"))
    cfg = read_manifest(bundle, verify=False).model
    rng = np.random.default_rng(5)
    np.savez(d / "calib.npz", images=rng.standard_normal((32, cfg.in_chans, cfg.img_size, cfg.img_size), dtype=np.float32))
    calibrate_bundle(bundle, budgets="native,0.35,0.25", calibration=d / "calib.npz")
    return bundle


@pytest.fixture(scope="session")
def t2t_half_gmacs_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``half_gmacs_bundle``'s T2T twin: a performer stem, 3 blocks, 17 tokens, 3 heads, ~50% GMACs, max batch 4."""
    from adavit_deploy.export import export_bundle
    from adavit_deploy.synthetic import random_checkpoint

    cfg = AdaViTConfig.from_flags(**T2T_SMALL_ARCH)
    d = tmp_path_factory.mktemp("t2t-half-gmacs")
    return export_bundle(random_checkpoint(cfg, d / "random.pth"), d / "bundle", max_batch=4)


class Exported(NamedTuple):
    checkpoint: Path
    bundle: Path


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Exported]:
    """``exported(**config_kwargs)``: ``make_checkpoint(**config_kwargs)``'s checkpoint and bundle, exported once.

    One export per distinct layout for the whole session (read-only: copy before changing files).
    """
    from adavit_deploy.export import export_bundle

    done: dict[tuple, Exported] = {}

    def get(**config_kwargs: Any) -> Exported:
        key = tuple(sorted(config_kwargs.items()))
        if key not in done:
            d = tmp_path_factory.mktemp("exported")
            save_checkpoint(build_random_model(0, True, **config_kwargs), d / "random.pth.tar")
            done[key] = Exported(d / "random.pth.tar", export_bundle(d / "random.pth.tar", d / "bundle"))
        return done[key]

    return get


@pytest.fixture(scope="session")
def reference_bundle(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``reference_bundle(name)``: the bundle of reference fixture ``name``, exported once per session (read-only)."""
    from adavit_deploy.export import export_bundle

    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            done[name] = export_bundle(fixtures_dir / f"{name}.pth.tar", tmp_path_factory.mktemp(name) / "bundle")
        return done[name]

    return get
