"""AuralSAM2 = SAM2 (`v_model`) + AuralFuser (`aural_fuser`), with the official clip forward.

`build_auralsam2` gives a module whose `state_dict()` has exactly the official full-model keys.
Frames are encoded and fused in windows (one clip = one window): the image encoder and the fuser
do not depend on the memory bank, so batching them is where the speed comes from; the memory /
decoder step then runs frame by frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from ..errors import AuralSAM2Error, PromptError
from .aural_fuser import AuralFuser, FuserOutput

#: short model names -> SAM 2.0 configs bundled with the `sam2` package (AuralSAM2 uses 2.0)
SAM2_CONFIGS = {
    "hiera_t": "sam2_hiera_t",
    "hiera_s": "sam2_hiera_s",
    "hiera_b+": "sam2_hiera_b+",
    "hiera_l": "sam2_hiera_l",
}
PREDICTOR_TARGET = "napari_auralsam2.core.model.predictor.AuralSAM2Predictor"
#: "avs": AVSBench checkpoints (the sounding object); "refavs": Ref-AVS (the sounding object a text refers to)
VARIANTS = ("avs", "refavs")
AVS_CLIP_FRAMES = 5  # AVSBench v1s/v1m clips: one encoder/fuser window
IMAGE_SIZE_MULTIPLE = 32  # Hiera's patch embed (4) x 3 poolings (8)
#: the stock video predictor's post-processing settings (fill_hole_area needs sam2's CUDA op)
POSTPROCESSING = {
    "binarize_mask_from_pts_for_mem_enc": True,
    "sam_mask_decoder_extra_args": {
        "dynamic_multimask_via_stability": True,
        "dynamic_multimask_stability_delta": 0.05,
        "dynamic_multimask_stability_thresh": 0.98,
    },
    "fill_hole_area": 0,
}


def sam2_config_path(sam2_config: str) -> Path:
    """Resolve "hiera_l", "sam2_hiera_l" or a yaml path to a SAM2 config file."""
    name = SAM2_CONFIGS.get(sam2_config, sam2_config)
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
    else:
        path = Path(str(resources.files("sam2") / "configs" / "sam2" / f"{name}.yaml"))
    if not path.is_file():
        raise AuralSAM2Error(f"unknown SAM2 config {sam2_config!r}",
                             f"use one of {', '.join(SAM2_CONFIGS)} or a path to a SAM2 yaml")
    return path


def build_sam2_predictor(sam2_config: str = "sam2_hiera_l", image_size: int = 1024):
    """Instantiate the SAM2 video predictor subclass from a bundled config, without hydra's globals."""
    cfg = OmegaConf.load(sam2_config_path(sam2_config))
    cfg.model._target_ = PREDICTOR_TARGET
    cfg.model.image_size = image_size
    for key, value in POSTPROCESSING.items():
        cfg.model[key] = value
    OmegaConf.resolve(cfg)
    return instantiate(cfg.model, _recursive_=True)


@dataclass
class ClipOutput:
    """Per-frame decoder outputs of the official clip forward."""

    multimask_logits: torch.Tensor  # [T, 3, S, S] high-res logits of the 3 multimask outputs
    low_res_multimask_logits: torch.Tensor  # [T, 3, S/4, S/4]
    ious: torch.Tensor  # [T, 3] predicted IoUs
    object_score_logits: torch.Tensor  # [T, 1]
    prompts: FuserOutput

    @property
    def masks(self) -> torch.Tensor:
        """`iou_select` decoding: the multimask logit map with the highest predicted IoU, [T, S, S]."""
        best = self.ious.argmax(dim=-1)
        return self.multimask_logits[torch.arange(len(best)), best]


class AuralSAM2(nn.Module):
    """The full model; submodules and state_dict keys follow the official `AVmodel`."""

    variant = "avs"
    clip_frames = AVS_CLIP_FRAMES
    reads_text = False  # whether objects can be named in words (Ref-AVS weights)

    def __init__(self, v_model: nn.Module, aural_fuser: AuralFuser) -> None:
        super().__init__()
        self.v_model = v_model
        self.aural_fuser = aural_fuser

    @property
    def image_size(self) -> int:
        return self.v_model.image_size

    @property
    def device(self) -> torch.device:
        return self.v_model.device

    def encode_window(self, frames: torch.Tensor,
                      examples: torch.Tensor | None = None) -> tuple[dict, FuserOutput | None]:
        """Encode frames [T, 3, S, S] in one batch; fuse with audio [T, 2, 96, 64] when given.

        Returns SAM2's backbone output (high-res levels projected as stock `forward_image` does)
        and the fuser's prompts, computed from the *raw* pyramid as the official code does.
        """
        out = self.v_model.image_encoder(frames)
        pyramid = list(out["backbone_fpn"])
        prompts = self.window_prompts(pyramid, examples) if examples is not None else None
        if self.v_model.use_high_res_features_in_sam:
            decoder = self.v_model.sam_mask_decoder
            pyramid[0] = decoder.conv_s0(pyramid[0])
            pyramid[1] = decoder.conv_s1(pyramid[1])
        return {"backbone_fpn": pyramid, "vision_pos_enc": list(out["vision_pos_enc"])}, prompts

    def window_prompts(self, pyramid: list[torch.Tensor], examples: torch.Tensor) -> FuserOutput:
        """The fuser's prompts for a window, from the raw pyramid and the audio examples."""
        return self.aural_fuser(pyramid, examples)

    def validate_text(self, text: str | None, use_audio: bool) -> str | None:
        """An object's text prompt, checked for this model (None: no text). AVS checkpoints read none."""
        if text is None:
            return None
        raise PromptError("the loaded AuralSAM2 checkpoint (AVSBench variant) cannot read text",
                          "load the Ref-AVS weights (--release refavs) or drop the text prompt")

    def eval_cond_frame(self, num_frames: int) -> int:
        """The official conditioning frame at evaluation: frame 0 for AVS."""
        return 0

    def clip_prompts(self, prompts, text: str | None) -> FuserOutput:
        """The window's prompts for a clip referred to by `text` (AVS: no text)."""
        self.validate_text(text, use_audio=True)
        return prompts

    def segment_clip(self, frames: torch.Tensor, audio: torch.Tensor, cond_frame: int | None = None,
                     text: str | None = None) -> ClipOutput:
        """The official clip forward: audio prompts on every frame, `cond_frame` first, then the rest in order.

        frames: [T, 3, S, S] ImageNet-normalised; audio: [T, 2, 96, 64] log-mel examples; text: the
        referring expression (Ref-AVS only). cond_frame None: the official evaluation rule.
        """
        sam = self.v_model
        num_frames = frames.shape[0]
        cond_frame = self.eval_cond_frame(num_frames) if cond_frame is None else cond_frame
        backbone, prompts = self.encode_window(frames, audio)
        prompts = self.clip_prompts(prompts, text)
        _, feats, pos, sizes = sam._prepare_backbone_features(backbone)
        memory = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        results: dict[int, tuple] = {}
        for t in [cond_frame] + [i for i in range(num_frames) if i != cond_frame]:
            frame_feats = [x[:, t:t + 1] for x in feats]
            frame_pos = [x[:, t:t + 1] for x in pos]
            with sam.use_prompts(prompts.frame(t)):
                out, heads, _, _ = sam._track_step(t, t == cond_frame, frame_feats, frame_pos, sizes, None, None,
                                                   memory, num_frames, False, None)
                low_multi, high_multi, ious, low, high, obj_ptr, score = heads
                out.update(pred_masks=low, pred_masks_high_res=high, obj_ptr=obj_ptr, object_score_logits=score)
                sam._encode_memory_in_output(frame_feats, sizes, None, True, high, score, out)
            memory["cond_frame_outputs" if t == cond_frame else "non_cond_frame_outputs"][t] = out
            results[t] = (high_multi, low_multi, ious, score)
        stacked = [torch.cat([results[t][k] for t in range(num_frames)]) for k in range(4)]
        return ClipOutput(*stacked, prompts=prompts)


def build_auralsam2(sam2_config: str = "sam2_hiera_l", image_size: int = 1024, device: str | torch.device = "cpu",
                    variant: str = "avs", text_model: str | Path | None = None) -> AuralSAM2:
    """Build AuralSAM2 with random weights (load checkpoints with `load_checkpoint`).

    variant "refavs" adds the text encoder: read from the Hugging Face folder `text_model`
    (distilroberta-base), or, without one, its architecture with random weights.
    """
    if variant not in VARIANTS:
        raise AuralSAM2Error(f"unknown variant {variant!r}", f"use one of {', '.join(VARIANTS)}")
    if image_size % IMAGE_SIZE_MULTIPLE:
        raise AuralSAM2Error(f"image size {image_size} is not a multiple of {IMAGE_SIZE_MULTIPLE}",
                             "SAM2's Hiera needs it; use e.g. 1024 (released weights), 512 or 256")
    if variant == "refavs":
        from .refavs import build_refavs

        model = build_refavs(build_sam2_predictor(sam2_config, image_size), text_model)
    else:
        if text_model is not None:
            raise AuralSAM2Error("a text model was given for the AVS variant, which reads no text",
                                 "use variant 'refavs' (Ref-AVS weights) for text prompts")
        model = AuralSAM2(build_sam2_predictor(sam2_config, image_size), AuralFuser())
    return model.to(device).eval()
