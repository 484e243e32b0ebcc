"""Checkpoint reading and strict loading for AuralSAM2, in every layout the official code uses.

Accepted: a full-model file (`v_model.*` + `aural_fuser.*`, and for Ref-AVS `t_model.*`, which may
be left out: the text model then comes from its own folder); a fuser-only file (bare AuralFuser
keys, or `aural_fuser.*`) plus a stock SAM2 checkpoint (`{"model": ...}`); legacy files with
`audio_prompter.*` / `train_*` / `training_layers.N` names (remapped as the official
`tools/remap_aural_ckpt_keys.py` does); a VGGish file for training from scratch; `.safetensors` for
any of them. Pickles are always read with `weights_only=True`. `checkpoint_variant` tells AVS from
Ref-AVS files by what they hold.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..errors import CheckpointError

LEGACY_PREFIX = "audio_prompter."
FUSER_PREFIX = "aural_fuser."
SAM2_PREFIX = "v_model."
TEXT_PREFIX = "t_model."
TEXT_PROJ = "text_proj."  # only the Ref-AVS fuser has it
SAM2_ONLY_KEY = "image_encoder."  # a bare SAM2 state_dict starts with its image encoder
#: legacy AuralFuser module names (1-based) -> current ModuleList names (0-based)
LEGACY_RENAMES = tuple(
    [(f"train_f_patch_embed{i}", f"patch_embeds.{i - 1}") for i in (1, 2, 3)]
    + [(f"train_f_a_block{i}", f"fusion_modules.{i - 1}") for i in (1, 2, 3)]
    + [(f"train_f_block{i}", f"f_blocks.{i - 1}") for i in (1, 2, 3)]
    + [(f"train_a_block{i}", f"a_blocks.{i - 1}") for i in (1, 2, 3)]
    + [(f"train_smooth{i}", f"smooth_convs.{i - 1}") for i in (1, 2)]
)
#: duplicated weights in legacy files, dropped by the official remap tool
LEGACY_DUPLICATES = (".training_layers.", ".finetuning_layers.")
#: the old `training_layers` ModuleList, in its append order -> current module names (Ref-AVS remap tool)
LEGACY_LAYER_INDEX = ("patch_embeds.0", "patch_embeds.1", "patch_embeds.2", "f_blocks.0", "a_blocks.0",
                      "fusion_modules.0", "f_blocks.1", "a_blocks.1", "fusion_modules.1", "f_blocks.2", "a_blocks.2",
                      "fusion_modules.2", "smooth_convs.0", "smooth_convs.1", "train_proj_v1", "train_proj_a1",
                      "text_proj")
_LEGACY_LAYER = re.compile(r"^(?:audio_prompter|aural_fuser)\.training_layers\.(\d+)\.(.+)$")
_LEGACY_VGG = re.compile(r"^(?:audio_prompter|aural_fuser)\.finetuning_layers\.0\.(.+)$")
_WRAPPERS = ("model", "state_dict")
_EXAMPLES = 3


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a tensor dict from .pt/.pth/.safetensors; unwrap `{"model": ...}` / `{"state_dict": ...}`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}", "check the path")
    try:
        if path.suffix == ".safetensors":
            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" not in str(err):  # not a refused class: the bytes themselves are broken
            raise _corrupted(path) from err
        raise CheckpointError(
            f"{path.name} stores arbitrary Python objects; refusing to unpickle it (weights_only=True)",
            "re-save it as a plain state_dict or .safetensors from a trusted environment") from err
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError, IndexError,
            SafetensorError) as err:  # what torch's safe unpickler / safetensors raise on broken bytes
        raise _corrupted(path) from err
    for key in _WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path.name} is not a state_dict of tensors", "pass an AuralSAM2 or SAM2 checkpoint")
    return obj


def _corrupted(path: Path) -> CheckpointError:
    return CheckpointError(f"cannot read checkpoint {path.name}: it is corrupted or not a PyTorch/safetensors file",
                           "download it again")


def _legacy_layer(key: str) -> str | None:
    """The current name of an old `training_layers.N` / `finetuning_layers.0` (VGGish) key, if it is one."""
    match = _LEGACY_LAYER.match(key)
    if match:
        index = int(match.group(1))
        return f"{FUSER_PREFIX}{LEGACY_LAYER_INDEX[index]}.{match.group(2)}" if index < len(LEGACY_LAYER_INDEX) else ""
    match = _LEGACY_VGG.match(key)
    return f"{FUSER_PREFIX}vgg.{match.group(1)}" if match else None


def remap_legacy_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`audio_prompter.*` -> `aural_fuser.*` with current module names; old `training_layers.N` names
    fill in what the current names do not hold (they duplicate them in files that have both)."""
    out, layers = {}, {}
    for key, value in state.items():
        layer = _legacy_layer(key)
        if layer is not None:
            if layer:
                layers[layer] = value
            continue
        if key.startswith((LEGACY_PREFIX, FUSER_PREFIX)):
            if any(dup in key for dup in LEGACY_DUPLICATES):
                continue
            key = FUSER_PREFIX + key.split(".", 1)[1]
            for old, new in LEGACY_RENAMES:
                key = key.replace(old, new)
        out[key] = value
    for key, value in layers.items():
        out.setdefault(key, value)
    return out


def checkpoint_variant(state: dict[str, torch.Tensor]) -> str:
    """"refavs" for a Ref-AVS file (a text branch or text model), else "avs" (keys after `remap_legacy_keys`)."""
    return "refavs" if any(k.startswith(TEXT_PREFIX) or TEXT_PROJ in k for k in state) else "avs"


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str, skip: str | None = None) -> None:
    """`load_state_dict(strict=True)` whose error names the missing/unexpected keys in one line;
    keys starting with `skip` are left as they are (a full Ref-AVS file without its text model)."""
    expected = {k: v for k, v in module.state_dict().items() if skip is None or not k.startswith(skip)}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{name} {len(keys)} keys (e.g. {', '.join(keys[:_EXAMPLES])})"
                 for name, keys in (("missing", missing), ("unexpected", unexpected), ("wrong-shape", wrong)) if keys]
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(parts),
                              "check the model size (--model) and that this is the right kind of checkpoint")
    module.load_state_dict(state, strict=skip is None)


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_checkpoint(model: nn.Module, checkpoint: str | Path | None = None,
                    sam2_checkpoint: str | Path | None = None, vggish_checkpoint: str | Path | None = None,
                    state: dict[str, torch.Tensor] | None = None) -> str:
    """Load weights into an `AuralSAM2`; returns the layout found ("full", "fuser" or "none").

    A full-model checkpoint needs nothing else. A fuser-only one takes SAM2's weights from
    `sam2_checkpoint` (loaded first, so the fuser file decides shared keys). `state`: the content of
    `checkpoint` when the caller has read it already.
    """
    if sam2_checkpoint is not None:
        load_strict(model.v_model, read_state_dict(sam2_checkpoint), Path(sam2_checkpoint).name)
    if vggish_checkpoint is not None:
        load_strict(model.aural_fuser.vgg, read_state_dict(vggish_checkpoint), Path(vggish_checkpoint).name)
    if checkpoint is None:
        return "none"
    name = Path(checkpoint).name
    state = remap_legacy_keys(read_state_dict(checkpoint) if state is None else state)
    variant = checkpoint_variant(state)
    if variant != model.variant and not any(k.startswith(SAM2_ONLY_KEY) for k in state):
        raise CheckpointError(f"{name} holds {variant} weights but the model was built for {model.variant}",
                              f"build the model with variant {variant!r}")
    if any(k.startswith(SAM2_PREFIX) for k in state):
        without_text = hasattr(model, "t_model") and not any(k.startswith(TEXT_PREFIX) for k in state)
        load_strict(model, state, name, skip=TEXT_PREFIX if without_text else None)
        return "full"
    if any(k.startswith(FUSER_PREFIX) for k in state):
        state = _strip(state, FUSER_PREFIX)
    elif any(k.startswith(SAM2_ONLY_KEY) for k in state):
        raise CheckpointError(f"{name} is a SAM2 checkpoint, not an AuralSAM2 one",
                              "pass it as the SAM2 checkpoint (--sam2-checkpoint)")
    if sam2_checkpoint is None:
        raise CheckpointError(f"{name} holds only the AuralFuser", "also pass the SAM2 checkpoint (sam2_hiera_large.pt)")
    load_strict(model.aural_fuser, state, name)
    return "fuser"
