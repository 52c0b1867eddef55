"""The one typed description of an AdaViT model, resolved once.

Everything downstream (the PyTorch model, the cost model, the exported graphs,
the bundle manifest) reads this object; nothing re-derives architecture from
tensors or flags a second time. Precedence when resolving (see
``model/checkpoint.py``): explicit overrides > tensor shapes > checkpoint
``args`` > the defaults below.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, param

#: (kernel, stride, padding) of the T2T stem's three soft splits (unfolds).
T2T_SOFT_SPLITS = ((7, 4, 2), (3, 2, 1), (3, 2, 1))
#: The T2T stem's total stride (4 * 2 * 2): its tokens are 16 x 16 pixel cells.
T2T_PATCH = 16
#: LayerNorm eps everywhere in T2T-ViT (stem and blocks): nn.LayerNorm's default; DeiT's blocks use 1e-6.
T2T_EPS = 1e-5

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Resize filters of timm's eval transform (Pillow's, by name).
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")


@dataclass(frozen=True)
class Thresholds:
    """Sigmoid thresholds of the three decisions (ADAVIT.md steps 2-4)."""

    head: float = 0.5
    layer: float = 0.5
    token: float = 0.6

    def __post_init__(self) -> None:
        # NaN would turn every decision off (p > NaN is False); outside [0, 1] a decision never changes
        for name in ("head", "layer", "token"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
                raise ConfigError(
                    f"{name} threshold {value!r} is not a number in [0, 1]: decisions compare probabilities with it"
                )


@dataclass(frozen=True)
class Preprocess:
    """ImageNet eval transform of the reference (resize 248, crop 224, bicubic)."""

    crop_pct: float = 0.9
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if isinstance(self.crop_pct, bool) or not isinstance(self.crop_pct, numbers.Real) or not 0 < self.crop_pct <= 1:
            raise ConfigError(f"preprocess crop_pct {self.crop_pct!r} is not in (0, 1]")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"preprocess interpolation {self.interpolation!r}: choose one of {', '.join(INTERPOLATIONS)}")
        # a NaN mean or a zero std makes every input NaN / Inf, which would then be blamed on the images
        if not all(math.isfinite(m) for m in self.mean) or not all(0 < s < math.inf for s in self.std):
            raise ConfigError(f"preprocess mean {list(self.mean)} / std {list(self.std)}: need finite values and std > 0")


STEM_ATTENTIONS = ("performer", "transformer")


@dataclass(frozen=True)
class T2TStem:
    """The tokens-to-token stem of the T2T-ViT family (ADAVIT.md, "The T2T-ViT family").

    Three soft splits (unfold 7/4/2, 3/2/1, 3/2/1) with a token attention of
    width ``token_dim`` after the first two, then a projection to the embed
    dim: ``img_size / 16`` patches per side, hence ``patch_size`` 16.
    """

    attention: str = "performer"  # "performer" (the released model) | "transformer"
    token_dim: int = 64
    random_features: int = 32  # the performer's kernel features (token_dim * kernel_ratio 0.5)

    def __post_init__(self) -> None:
        if self.attention not in STEM_ATTENTIONS:
            raise ConfigError(f"unknown T2T token attention {self.attention!r}; choose one of {', '.join(STEM_ATTENTIONS)}")
        if self.token_dim < 1 or self.random_features < 1:
            raise ConfigError(f"T2T stem widths must be positive, got token_dim {self.token_dim}, {self.random_features} features")


@dataclass(frozen=True)
class AdaViTConfig:
    """Architecture, per-block decision layout and inference flags.

    Decision layout is stored per block (which blocks carry a head / sub-layer /
    token selector or a policy LayerNorm) rather than as the training flags, so
    a checkpoint's own tensors are the truth; ``from_flags`` maps the
    reference's flags (``keep_layers``, ``ada_token_start_layer``...) onto it.
    """

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_hidden: int = 1536
    qkv_bias: bool = True
    eps: float = 1e-6
    head_select: tuple[int, ...] = ()
    layer_select: tuple[int, ...] = ()
    token_select: tuple[int, ...] = ()
    norm_policy: tuple[int, ...] = ()
    token_with_mlp: bool = True
    qk_scale: float | None = None  # None: head_dim ** -0.5
    t2t: T2TStem | None = None  # None: the DeiT family's patch embedding
    thresholds: Thresholds = field(default_factory=Thresholds)
    preprocess: Preprocess = field(default_factory=Preprocess)

    def __post_init__(self) -> None:
        for name in ("img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "depth", "num_heads", "mlp_hidden"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} {getattr(self, name)} is not >= 1")
        if not 0 < self.eps < math.inf:  # NaN too
            raise ConfigError(f"LayerNorm eps {self.eps} is not a positive number")
        if self.embed_dim % self.num_heads:
            raise ConfigError(
                f"embed dim {self.embed_dim} is not divisible by {self.num_heads} heads: "
                f"pass {param('num_heads')} with a divisor of the embed dim"
            )
        if self.img_size % self.patch_size:
            raise ConfigError(f"image size {self.img_size} is not a multiple of patch size {self.patch_size}")
        if self.t2t is not None and self.patch_size != T2T_PATCH:
            raise ConfigError(f"the T2T stem reduces by {T2T_PATCH}, not {self.patch_size}: use patch_size {T2T_PATCH}")
        if self.qk_scale is not None and not self.qk_scale > 0:
            raise ConfigError(f"{param('qk_scale')} must be positive, got {self.qk_scale}")
        for name in ("head_select", "layer_select", "token_select", "norm_policy"):
            bad = [b for b in getattr(self, name) if not 0 <= b < self.depth]
            if bad:
                raise ConfigError(f"{name} names blocks {bad} outside 0..{self.depth - 1}")

    # -- derived sizes -------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def family(self) -> str:
        return "deit" if self.t2t is None else "t2t"

    @property
    def attn_scale(self) -> float:
        """The blocks' attention scale: ``qk_scale`` where given, else ``head_dim ** -0.5``."""
        return self.head_dim**-0.5 if self.qk_scale is None else self.qk_scale

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        return self.num_patches + 1

    @property
    def is_adaptive(self) -> bool:
        return bool(self.head_select or self.layer_select or self.token_select)

    def flags(self) -> dict[str, Any]:
        """The reference's training flags, as far as the layout expresses them."""
        return {
            "ada_head": bool(self.head_select),
            "ada_layer": bool(self.layer_select),
            "ada_token": bool(self.token_select),
            "ada_token_with_mlp": self.token_with_mlp,
            "keep_layers": min(self.head_select or self.layer_select or (self.depth,)),
            "ada_token_start_layer": min(self.token_select or (self.depth,)),
            "norm_policy": bool(self.norm_policy),
        }

    # -- serialisation, used by the bundle manifest (read back, type-checked, by bundle.py) --
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "AdaViTConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_flags(
        cls,
        *,
        ada_head: bool = True,
        ada_layer: bool = True,
        ada_token: bool = True,
        ada_token_with_mlp: bool = True,
        keep_layers: int = 1,
        ada_token_start_layer: int = 0,
        norm_policy: bool = False,
        **arch: Any,
    ) -> "AdaViTConfig":
        """Build the per-block layout the reference derives from its flags."""
        depth = arch.get("depth", cls.depth)
        selected = tuple(range(keep_layers, depth))
        return cls(
            head_select=selected if ada_head else (),
            layer_select=selected if ada_layer else (),
            token_select=tuple(range(ada_token_start_layer, depth)) if ada_token else (),
            norm_policy=selected if norm_policy and (ada_head or ada_layer) else (),
            token_with_mlp=ada_token_with_mlp,
            **arch,
        )


def _deit(embed_dim: int, num_heads: int) -> dict[str, Any]:
    return dict(img_size=224, patch_size=16, embed_dim=embed_dim, depth=12, num_heads=num_heads, mlp_hidden=4 * embed_dim)


def _t2t(embed_dim: int, depth: int, num_heads: int) -> dict[str, Any]:
    """The reference's ``ada_step_t2t_vit_*_lnorm``: performer stem, MLP ratio 3, eps 1e-5, no q/k/v bias."""
    return dict(
        img_size=224, patch_size=T2T_PATCH, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
        mlp_hidden=3 * embed_dim, qkv_bias=False, eps=T2T_EPS, t2t=T2TStem(),
    )


#: Architecture presets of the released families (decision layout = the paper's h-l-tmlp models),
#: named as the reference's model names where it has them.
PRESETS: dict[str, dict[str, Any]] = {
    "ada-deit-t": _deit(192, 3),
    "ada-deit-s": _deit(384, 6),
    "ada-deit-b": _deit(768, 12),
    "ada_step_t2t_vit_14_lnorm": _t2t(384, 14, 6),
    "ada_step_t2t_vit_19_lnorm": _t2t(448, 19, 7),
}

#: Heads of the standard DeiT and T2T-ViT widths, for checkpoints that carry no head count.
DEFAULT_HEADS = {192: 3, 384: 6, 448: 7, 768: 12}


def preset(name: str, **overrides: Any) -> AdaViTConfig:
    """An Ada-DeiT or Ada-T2T-ViT preset with all decisions on (``keep_layers=1``), as released."""
    try:
        arch = PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
    return AdaViTConfig.from_flags(**{**arch, **overrides})
