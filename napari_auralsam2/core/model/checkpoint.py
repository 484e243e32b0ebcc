"""Checkpoint reading and strict loading for AuralSAM2, in every layout the official code uses.

Accepted: a full-model file (`v_model.*` + `aural_fuser.*`, and for Ref-AVS `t_model.*`, which may
be left out: the text model then comes from its own folder); a fuser-only file (bare AuralFuser
keys, or `aural_fuser.*`) plus a stock SAM2 checkpoint (`{"model": ...}`); legacy files with
`audio_prompter.*` / `train_*` / `training_layers.N` names (remapped as the official
`tools/remap_aural_ckpt_keys.py` does); a VGGish file for training from scratch; `.safetensors` for
any of them. Pickles are always read with `weights_only=True`.

A file is classified by what it holds (the top-level module names of its keys: the full model's,
the fuser's, SAM2's or VGGish's), so a file given in the wrong place, or one that is not a model
of ours at all, is named as such before any key-by-key comparison; `checkpoint_variant` then tells
AVS from Ref-AVS files (a text branch or text model), so a file never loads into the other variant.
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
FULL, FUSER, SAM2, VGGISH = "full", "fuser", "sam2", "vggish"
KIND_NAMES = {FULL: "an AuralSAM2 checkpoint", FUSER: "an AuralFuser checkpoint", SAM2: "a SAM2 checkpoint",
              VGGISH: "a VGGish checkpoint"}


def existing_checkpoint(path: str | Path) -> Path:
    """The path of a checkpoint file; CheckpointError for a folder or a missing file."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file", "give the .pth/.pt/.safetensors file itself")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}", "check the path")
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a tensor dict from .pt/.pth/.safetensors; unwrap `{"model": ...}` / `{"state_dict": ...}`."""
    path = existing_checkpoint(path)
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


def _tops(keys) -> set[str]:
    return {key.split(".", 1)[0] for key in keys}


def checkpoint_kind(state: dict[str, torch.Tensor], model: nn.Module) -> str | None:
    """FULL, FUSER, SAM2 or VGGISH: whose top-level module names cover most keys; None for none."""
    modules = {FULL: model, FUSER: model.aural_fuser, SAM2: model.v_model, VGGISH: model.aural_fuser.vgg}
    tops = [key.split(".", 1)[0] for key in state]
    counts = {}
    for kind, module in modules.items():
        names = _tops(module.state_dict())
        counts[kind] = sum(top in names for top in tops)
    kind = max(counts, key=counts.get)
    return kind if counts[kind] else None


def _kind_error(name: str, kind: str | None, wanted: str, state: dict[str, torch.Tensor],
                hint: str) -> CheckpointError:
    if kind is None:
        names = ", ".join(sorted(_tops(state))[:_EXAMPLES])
        return CheckpointError(f"{name} holds none of the weights AuralSAM2 uses (its names start with {names}): "
                               f"it is not {KIND_NAMES[wanted]}", hint)
    return CheckpointError(f"{name} is {KIND_NAMES[kind]}, not {KIND_NAMES[wanted]}", hint)


def _load_part(module: nn.Module, model: nn.Module, path: str | Path, wanted: str, hint: str) -> None:
    """Load the SAM2 or VGGish file of `load_checkpoint` after checking that it is one."""
    name, state = Path(path).name, read_state_dict(path)
    kind = checkpoint_kind(state, model)
    if kind != wanted:
        raise _kind_error(name, kind, wanted, state, hint)
    load_strict(module, state, name)


def load_checkpoint(model: nn.Module, checkpoint: str | Path | None = None,
                    sam2_checkpoint: str | Path | None = None, vggish_checkpoint: str | Path | None = None,
                    state: dict[str, torch.Tensor] | None = None) -> str:
    """Load weights into an `AuralSAM2`; returns the layout found ("full", "fuser" or "none").

    A full-model checkpoint needs nothing else. A fuser-only one takes SAM2's weights from
    `sam2_checkpoint` (loaded first, so the fuser file decides shared keys). `state`: the content of
    `checkpoint` when the caller has read it already.
    """
    if sam2_checkpoint is not None:
        _load_part(model.v_model, model, sam2_checkpoint, SAM2,
                   "the SAM2 checkpoint is Meta's sam2_hiera_*.pt (AuralSAM2 files go to --checkpoint)")
    if vggish_checkpoint is not None:
        _load_part(model.aural_fuser.vgg, model, vggish_checkpoint, VGGISH,
                   "the VGGish checkpoint is vggish-10086976.pth")
    if checkpoint is None:
        return "none"
    name = Path(checkpoint).name
    state = remap_legacy_keys(read_state_dict(checkpoint) if state is None else state)
    if not any(k.startswith(SAM2_PREFIX) for k in state) and any(k.startswith(FUSER_PREFIX) for k in state):
        state = _strip(state, FUSER_PREFIX)
    kind = checkpoint_kind(state, model)
    if kind == SAM2:
        raise CheckpointError(f"{name} is a SAM2 checkpoint, not an AuralSAM2 one",
                              "pass it as the SAM2 checkpoint (--sam2-checkpoint)")
    if kind not in (FULL, FUSER):
        raise _kind_error(name, kind, FULL, state,
                          "pass a released auralsam2_*.pth or a training run's best.pth")
    variant = checkpoint_variant(state)
    if variant != model.variant:
        raise CheckpointError(f"{name} holds {variant} weights but the model was built for {model.variant}",
                              f"build the model with variant {variant!r}")
    if kind == FULL:
        without_text = hasattr(model, "t_model") and not any(k.startswith(TEXT_PREFIX) for k in state)
        load_strict(model, state, name, skip=TEXT_PREFIX if without_text else None)
        return "full"
    if sam2_checkpoint is None:
        raise CheckpointError(f"{name} holds only the AuralFuser", "also pass the SAM2 checkpoint (sam2_hiera_large.pt)")
    load_strict(model.aural_fuser, state, name)
    return "fuser"
