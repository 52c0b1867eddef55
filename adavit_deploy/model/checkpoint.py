"""Reading checkpoints safely and mapping them onto ``AdaViTConfig``.

The single place where foreign checkpoints are unwrapped and remapped
(timm's ``checkpoint_filter_fn`` idea): the reference's training checkpoints,
bare state dicts and dense timm/DeiT checkpoints all end here as one
reference-layout state dict plus a resolved config.
"""

from __future__ import annotations

import argparse
import math
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import DEFAULT_HEADS, PRESETS, T2T_EPS, T2T_PATCH, AdaViTConfig, Thresholds
from ..errors import CheckpointError, ConfigError, param
from .adavit import AdaViT
from .t2t import stem_from_state

#: Globals a reference checkpoint may hold besides tensors; nothing else is unpickled.
SAFE_GLOBALS: list[Any] = [argparse.Namespace]
WEIGHT_KEYS = ("state_dict_ema", "state_dict", "model")
REQUIRED = ("cls_token", "pos_embed", "head.weight")
T2T_PREFIX = "tokens_to_token."


@dataclass
class Checkpoint:
    """A checkpoint read from disk: reference-layout weights, training args, kind."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    args: dict[str, Any] = field(default_factory=dict)
    kind: str = "reference"  # "reference" | "state_dict" | "timm-dense"


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Load ``path`` with ``weights_only=True``; never runs pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {'is a directory, not a checkpoint file' if path.is_dir() else 'no such checkpoint file'}")
    check_zip_sizes(path)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch words it "unsupported GLOBAL posix.system ..." or "Unsupported global: GLOBAL getattr ..."
        found = re.search(r"\bGLOBAL\s+([\w.]+)", str(e))
        if found:
            raise CheckpointError(
                f"{path}: refused: its pickle references {found.group(1)}, which could run code "
                "(only tensors and argparse.Namespace are loaded)"
            ) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_sentence(e)})") from None
    except Exception as e:  # torch raises RuntimeError/EOFError/... for corrupt files
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_sentence(e)})") from None
    return _unwrap(path, obj)


#: A torch checkpoint stores its zip members uncompressed: their declared sizes add up to the file size.
#: Refused: declared sizes totalling more than MAX_INFLATION x the file *and* more than INFLATION_FLOOR
#: bytes, or one member above INFLATION_FLOOR that inflates more than MAX_MEMBER_RATIO x.
MAX_INFLATION = 4
MAX_MEMBER_RATIO = 100
INFLATION_FLOOR = 256 << 20


def check_zip_sizes(path: Path) -> None:
    """Refuse a zip checkpoint whose central directory declares implausible sizes, before inflating anything.

    ``torch.load`` allocates what each member declares, so a 2 MB file with a
    deflated 2 GiB member costs gigabytes of RSS before it fails. Only the
    central directory is read here. Legacy (non-zip) checkpoints are not
    compressed: what they hold is on disk, and ``weights_only`` still refuses code.
    """
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (bad zip: {e})") from None
    size = path.stat().st_size
    total = sum(m.file_size for m in members)
    if total > MAX_INFLATION * size and total > INFLATION_FLOOR:
        raise CheckpointError(
            f"{path}: refused: its zip members declare {total / 2**30:.1f} GiB uncompressed in a "
            f"{size / 2**20:.1f} MiB file (torch stores checkpoints uncompressed; a zip bomb?)"
        )
    for m in members:
        if m.file_size > INFLATION_FLOOR and m.file_size > MAX_MEMBER_RATIO * max(m.compress_size, 1):
            raise CheckpointError(
                f"{path}: refused: zip member {m.filename} declares {m.file_size / 2**30:.1f} GiB from "
                f"{m.compress_size / 2**20:.1f} MiB compressed (torch stores checkpoints uncompressed; a zip bomb?)"
            )


def _first_sentence(e: Exception) -> str:
    """The informative part of torch's multi-paragraph load errors."""
    text = " ".join(str(e).split()) or type(e).__name__
    text = text.split("Check the documentation of torch.load")[0]
    text = text.split(" from a trusted source. ")[-1].split("WeightsUnpickler error: ")[-1]
    text = text.split(". ")[0].strip().rstrip(".")
    # a bare key or opcode number (e.g. "101") says nothing to a user
    return "neither a zip archive nor a pickle" if text.isdigit() or isinstance(e, KeyError) else text


def _unwrap(path: Path, obj: Any) -> Checkpoint:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of weights, found {type(obj).__name__}")
    kind = "reference"
    weights = next((obj[k] for k in WEIGHT_KEYS if isinstance(obj.get(k), dict)), None)
    if weights is None:
        weights, kind = obj, "state_dict"
    args = obj.get("args") if weights is not obj else None
    args = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    state = checkpoint_filter_fn(weights)
    if any(re.fullmatch(r"(module\.)?blocks\.\d+\.attn\.qkv\.weight", k) for k in weights):
        kind = "timm-dense"  # the blocks' fused qkv (a T2T transformer stem has one of its own)
    return Checkpoint(path, state, args, kind)


def checkpoint_filter_fn(state_dict: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Strip ``module.``, split timm's fused ``qkv`` into the reference's q/k/v."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            continue
        key = key.removeprefix("module.")
        if key in ("dist_token", "head_dist.weight"):
            raise CheckpointError("distilled DeiT checkpoints (dist_token) are not supported")
        fused = re.fullmatch(r"(blocks\.\d+\.attn\.)qkv\.(weight|bias)", key)
        if fused:
            for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                out[f"{fused.group(1)}{name}.{fused.group(2)}"] = part.clone()
        else:
            out[key] = value
    return out


def _blocks_with(state: dict[str, torch.Tensor], suffix: str) -> tuple[int, ...]:
    found = (re.fullmatch(rf"blocks\.(\d+)\.{re.escape(suffix)}", k) for k in state)
    return tuple(sorted({int(m.group(1)) for m in found if m}))


def qk_scale_rule(args: dict[str, Any], overrides: dict[str, Any], embed_dim: int, t2t: bool) -> tuple[float | None, str]:
    """The attention scale (``None``: ``head_dim ** -0.5``) and where it comes from, for ``info``:
    ``--qk-scale`` > the checkpoint's ``args.qk_scale`` > the T2T factory's ``pretrained`` rule
    (``embed_dim ** -0.5``, easy to miss) > ``head_dim ** -0.5``."""
    if overrides.get("qk_scale") is not None:
        return overrides["qk_scale"], "--qk-scale"
    if "qk_scale" in args:
        scale = args["qk_scale"]
        return scale, "head_dim^-0.5" if scale is None else "the checkpoint's args.qk_scale"
    if t2t and args.get("pretrained"):
        return embed_dim**-0.5, "embed_dim^-0.5: the checkpoint's args.pretrained is true; --qk-scale overrides"
    return None, "head_dim^-0.5"


def infer_config(ckpt: Checkpoint, **overrides: Any) -> AdaViTConfig:
    """Resolve the config: explicit overrides > tensor shapes > ``args`` > defaults.

    ``overrides`` may hold ``num_heads``, ``token_with_mlp``, ``qk_scale`` and
    the thresholds ``head_threshold``, ``layer_threshold``, ``token_threshold``;
    ``None`` means "not given". The family is the stem's keys: ``patch_embed``
    (DeiT) or ``tokens_to_token`` (T2T-ViT).
    """
    sd, args = ckpt.state_dict, ckpt.args
    t2t = any(k.startswith(T2T_PREFIX) for k in sd)
    missing = [k for k in (*REQUIRED, *(() if t2t else ("patch_embed.proj.weight",))) if k not in sd]
    if missing:
        raise CheckpointError(
            f"{ckpt.path}: not an AdaViT/DeiT checkpoint nor a T2T-ViT one (missing {', '.join(missing)})"
        )
    overrides = {k: v for k, v in overrides.items() if v is not None}
    embed_dim = sd["cls_token"].shape[-1]
    grid = math.isqrt(sd["pos_embed"].shape[1] - 1)
    if grid * grid != sd["pos_embed"].shape[1] - 1:
        raise CheckpointError(f"{ckpt.path}: pos_embed holds {sd['pos_embed'].shape[1]} tokens, not 1 + a square grid")
    if t2t:
        stem, in_chans = stem_from_state(sd)
        family = dict(patch_size=T2T_PATCH, in_chans=in_chans, eps=T2T_EPS, t2t=stem)
    else:
        patch = sd["patch_embed.proj.weight"]
        family = dict(patch_size=patch.shape[-1], in_chans=patch.shape[1])
    head_select = _blocks_with(sd, "head_select.mlp_head.weight")
    token_select = _blocks_with(sd, "attn.token_select.mlp_head.weight")

    # a reference model name (args.model) says the heads when no head selector does
    named = PRESETS.get(str(args.get("model")), {})
    num_heads = overrides.get("num_heads") or args.get("num_heads")
    if head_select:
        found = sd[f"blocks.{head_select[0]}.head_select.mlp_head.weight"].shape[0]
        if num_heads and num_heads != found:
            raise ConfigError(f"{param('num_heads')} {num_heads} contradicts the checkpoint's head selector ({found} heads)")
        num_heads = found
    if named.get("embed_dim") == embed_dim:
        num_heads = num_heads or named["num_heads"]
    num_heads = num_heads or DEFAULT_HEADS.get(embed_dim)
    if not num_heads:
        raise ConfigError(f"cannot infer the number of heads for embed dim {embed_dim}: pass {param('num_heads')}")

    token_with_mlp = overrides.get("token_with_mlp", args.get("ada_token_with_mlp"))
    if token_with_mlp is None:
        if token_select:
            raise ConfigError(
                "the checkpoint selects tokens but does not say whether the FFN is token-masked: "
                f"pass {param('token_with_mlp', 'token-with-mlp', 'token_with_mlp=True')} or {param('token_with_mlp', 'no-token-with-mlp', 'token_with_mlp=False')}"
            )
        token_with_mlp = False
    thresholds = Thresholds(
        head=overrides.get("head_threshold", Thresholds.head),
        layer=overrides.get("layer_threshold", Thresholds.layer),
        token=overrides.get("token_threshold", Thresholds.token),
    )
    return AdaViTConfig(
        img_size=grid * family["patch_size"],
        num_classes=sd["head.weight"].shape[0],
        embed_dim=embed_dim,
        depth=1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks.")),
        num_heads=num_heads,
        mlp_hidden=sd["blocks.0.mlp.fc1.weight"].shape[0],
        qkv_bias="blocks.0.attn.query.bias" in sd,
        head_select=head_select,
        layer_select=_blocks_with(sd, "layer_select.mlp_head.weight"),
        token_select=token_select,
        norm_policy=_blocks_with(sd, "norm_policy.weight"),
        token_with_mlp=bool(token_with_mlp),
        qk_scale=qk_scale_rule(args, overrides, embed_dim, t2t)[0],
        thresholds=thresholds,
        **family,
    )


def build_model(cfg: AdaViTConfig, state_dict: dict[str, torch.Tensor]) -> AdaViT:
    """An eval-mode ``AdaViT`` holding exactly ``state_dict``; any mismatch is an error."""
    model = AdaViT(cfg)
    result = model.load_state_dict(state_dict, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing {', '.join(result.missing_keys[:4])}")
    if result.unexpected_keys:
        problems.append(f"unexpected {', '.join(result.unexpected_keys[:4])}")
    if problems:
        raise CheckpointError(f"weights do not fit the inferred architecture: {'; '.join(problems)}")
    return model.eval()


def load_model(path: str | Path, **overrides: Any) -> tuple[AdaViT, Checkpoint]:
    """Read, resolve and build in one call: what every command starts with."""
    ckpt = read_checkpoint(path)
    return build_model(infer_config(ckpt, **overrides), ckpt.state_dict), ckpt


def save_checkpoint(model: AdaViT, path: str | Path, **extra: Any) -> None:
    """Write ``model`` in the reference format (``state_dict`` + ``args`` Namespace)."""
    # num_heads too: without a head selector the tensors do not say it (infer_config reads it back)
    cfg = model.cfg
    arch = "ada_step_custom" if cfg.t2t is None else "ada_step_t2t_custom"
    scale = {} if cfg.qk_scale is None else {"qk_scale": cfg.qk_scale}
    args = argparse.Namespace(model=arch, num_heads=cfg.num_heads, **scale, **cfg.flags())
    torch.save({"state_dict": model.state_dict(), "args": args, "arch": arch, **extra}, path)
