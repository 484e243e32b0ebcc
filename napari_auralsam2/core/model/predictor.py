"""SAM2 that accepts AuralFuser prompts: a `SAM2VideoPredictor` subclass plus a prompted decoder.

Without prompts every method is stock SAM2 (the audio-free path equals the stock predictor).
With a frame's `FuserOutput` active (`use_prompts`), the mask decoder runs the AuralSAM2 way:
dense prompts are added to the image keys and sparse prompts to the 4 mask tokens inside the
two-way transformer, SAM2's own point/box tokens (our extension) are appended after the output
tokens, multimask output is always on, and the memory mask is binarised.
"""
from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from sam2.modeling.sam.transformer import TwoWayTransformer
from sam2.sam2_video_predictor import SAM2VideoPredictor

from .aural_fuser import FuserOutput

#: output tokens are [object score, IoU, 4 mask tokens] (pred_obj_scores=True in all configs)
MASK_TOKENS = slice(2, 6)


class PromptedTwoWayTransformer(TwoWayTransformer):
    """SAM2's two-way transformer, with AuralFuser prompts added between its layers."""

    prompts: FuserOutput | None = None

    @contextmanager
    def prompted(self, prompts: FuserOutput) -> Iterator[None]:
        self.prompts = prompts
        try:
            yield
        finally:
            self.prompts = None

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor):
        if self.prompts is None:
            return super().forward(image_embedding, image_pe, point_embedding)
        # coarsest first: layer 0 gets the stride-16 prompts, the final attention the finest
        dense = self.prompts.dense[::-1]
        sparse = self.prompts.sparse[::-1]
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)

        def add_sparse(tokens: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
            mask = tokens[:, MASK_TOKENS] + vec.to(tokens.dtype)
            return torch.cat([tokens[:, :MASK_TOKENS.start], mask, tokens[:, MASK_TOKENS.stop:]], dim=1)

        queries = add_sparse(point_embedding, sparse[0])
        # quirk: the official in-place add also changed the query PE, which all layers and the
        # final attention then use (released weights depend on it)
        query_pe = queries
        for i, layer in enumerate(self.layers):
            keys = keys + dense[i].to(keys.dtype)
            if i > 0:
                queries = add_sparse(queries, sparse[i])
            queries, keys = layer(queries=queries, keys=keys, query_pe=query_pe, key_pe=key_pe)
        queries = add_sparse(queries, sparse[-1])
        keys = keys + dense[-1].to(keys.dtype)
        attn_out = self.final_attn_token_to_image(q=queries + query_pe, k=keys + key_pe, v=keys)
        return self.norm_final_attn(queries + attn_out), keys


class AuralSAM2Predictor(SAM2VideoPredictor):
    """The `v_model` of AuralSAM2: stock SAM2 weights and API, audio prompts when given."""

    _frame_prompts: FuserOutput | None = None
    _batch_owner: int | None = None  # while `track_objects` runs a batch: the id of its first object

    def _build_sam_heads(self) -> None:
        super()._build_sam_heads()
        stock = self.sam_mask_decoder.transformer
        prompted = PromptedTwoWayTransformer(
            depth=stock.depth, embedding_dim=stock.embedding_dim, num_heads=stock.num_heads, mlp_dim=stock.mlp_dim)
        prompted.load_state_dict(stock.state_dict())
        self.sam_mask_decoder.transformer = prompted

    @contextmanager
    def use_prompts(self, prompts: FuserOutput | None) -> Iterator[None]:
        """Run the enclosed SAM2 calls with one frame's fuser prompts (None = stock SAM2)."""
        previous, self._frame_prompts = self._frame_prompts, prompts
        try:
            yield
        finally:
            self._frame_prompts = previous

    def _use_multimask(self, is_init_cond_frame, point_inputs):
        if self._frame_prompts is not None and point_inputs is None:
            return True  # official: audio-prompted frames always decode 3 masks
        return super()._use_multimask(is_init_cond_frame, point_inputs)

    def _encode_new_memory(self, current_vision_feats, feat_sizes, pred_masks_high_res, object_score_logits,
                           is_mask_from_pts):
        # official: a sentinel "point input" makes every audio-prompted memory mask binarised
        is_mask_from_pts = is_mask_from_pts or self._frame_prompts is not None
        return super()._encode_new_memory(current_vision_feats, feat_sizes, pred_masks_high_res,
                                          object_score_logits, is_mask_from_pts)

    def _run_single_frame_inference(self, inference_state, output_dict, frame_idx, *args, **kwargs):
        windows = inference_state.get(WINDOWS_KEY)
        owner = None if windows is None else (
            self._batch_owner if self._batch_owner is not None else _owner_id(inference_state, output_dict))
        guided = windows is not None and owner not in inference_state.get(UNGUIDED_KEY, ())
        prompts = windows.prompts(frame_idx) if guided else None
        if prompts is not None and not isinstance(prompts, FuserOutput):  # Ref-AVS: fused per object text
            prompts = prompts.for_text(inference_state.get(TEXTS_KEY, {}).get(owner))
        with self.use_prompts(prompts):
            out, masks = super()._run_single_frame_inference(inference_state, output_dict, frame_idx, *args, **kwargs)
        out["maskmem_features"] = _memory_dtype(out["maskmem_features"], inference_state["device"])
        return out, masks

    def _run_memory_encoder(self, inference_state, *args, **kwargs):
        features, pos = super()._run_memory_encoder(inference_state, *args, **kwargs)
        return _memory_dtype(features, inference_state["device"]), pos

    def _get_image_feature(self, inference_state, frame_idx, batch_size):
        windows = inference_state.get(WINDOWS_KEY)
        if windows is not None and frame_idx not in inference_state["cached_features"]:
            # features come from windowed encoding; the stock code then expands them per object
            inference_state["cached_features"] = {frame_idx: windows.image_and_features(frame_idx)}
        return super()._get_image_feature(inference_state, frame_idx, batch_size)

    def memory_reach(self) -> int:
        """How many frames away from the tracked one the memory attention may read (memories, pointers)."""
        return max(self.num_maskmem * self.memory_temporal_stride_for_eval, self.max_obj_ptrs_in_encoder)

    def memory_layout(self, output_dict: dict, frame_idx: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Which outputs of an object the memory attention of `frame_idx` can read.

        Objects with equal layouts attend to memories of the same frames in the same order, so
        they can be tracked through `frame_idx` as one batch (`track_objects`).
        """
        reach = self.memory_reach()
        near = (t for t in output_dict["non_cond_frame_outputs"] if 0 < abs(t - frame_idx) <= reach)
        return tuple(sorted(output_dict["cond_frame_outputs"])), tuple(sorted(near))

    def batch_key(self, inference_state: dict, obj_idx: int, frame_idx: int) -> tuple:
        """Objects with equal keys can run through `frame_idx` as one batch: the same memory layout,
        and the same prompts from the fuser (audio guidance on or off, the same text)."""
        obj_id = inference_state["obj_idx_to_id"][obj_idx]
        guided = obj_id not in inference_state.get(UNGUIDED_KEY, ())
        text = inference_state.get(TEXTS_KEY, {}).get(obj_id)
        return self.memory_layout(inference_state["output_dict_per_obj"][obj_idx], frame_idx), guided, text

    def track_objects(self, inference_state: dict, obj_idxs: Sequence[int], frame_idx: int,
                      reverse: bool) -> list[tuple[dict, torch.Tensor]]:
        """Track objects of one `batch_key` through a non-conditioning frame, as one batch.

        Memory attention, mask decoder and memory encoder run once for all of them; returns each
        object's compact output and low-res logits, as `_run_single_frame_inference` gives for one.
        """
        per_object = [inference_state["output_dict_per_obj"][i] for i in obj_idxs]
        if len(per_object) == 1:
            output_dict = per_object[0]
        else:
            output_dict = {key: StackedOutputs([outputs[key] for outputs in per_object])
                           for key in ("cond_frame_outputs", "non_cond_frame_outputs")}
        self._batch_owner = inference_state["obj_idx_to_id"][obj_idxs[0]]  # the batch's prompts are its
        try:
            out, masks = self._run_single_frame_inference(
                inference_state=inference_state, output_dict=output_dict, frame_idx=frame_idx,
                batch_size=len(per_object), is_init_cond_frame=False, point_inputs=None, mask_inputs=None,
                reverse=reverse, run_mem_encoder=True)
        finally:
            self._batch_owner = None
        if len(per_object) == 1:
            return [(out, masks)]
        return [(_row(out, i), masks[i:i + 1]) for i in range(len(per_object))]

    def _sparse_dense_prompts(self, batch: int, point_inputs, mask_inputs):
        points = None
        if point_inputs is not None:
            points = (point_inputs["point_coords"], point_inputs["point_labels"])
        masks = None
        if mask_inputs is not None:
            masks = mask_inputs.float()
            if masks.shape[-2:] != self.sam_prompt_encoder.mask_input_size:
                masks = F.interpolate(masks, size=self.sam_prompt_encoder.mask_input_size,
                                      mode="bilinear", align_corners=False, antialias=True)
        # official: no clicks -> zero sparse tokens (stock SAM2 would pad with a "not-a-point")
        sparse, dense = self.sam_prompt_encoder(points=points, boxes=None, masks=masks)
        if sparse.size(0) != batch:
            sparse, dense = sparse.expand(batch, -1, -1), dense.expand(batch, -1, -1, -1)
        return sparse, dense

    def _forward_sam_heads(self, backbone_features, point_inputs=None, mask_inputs=None,
                           high_res_features=None, multimask_output=False):
        if self._frame_prompts is None:
            return super()._forward_sam_heads(backbone_features, point_inputs, mask_inputs,
                                              high_res_features, multimask_output)
        batch = backbone_features.size(0)
        sparse, dense = self._sparse_dense_prompts(batch, point_inputs, mask_inputs)
        with self.sam_mask_decoder.transformer.prompted(self._frame_prompts):
            low_res_multimasks, ious, tokens, object_score_logits = self.sam_mask_decoder(
                image_embeddings=backbone_features,
                image_pe=self.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
                repeat_image=False,
                high_res_features=high_res_features,
            )
        # quirk: no NO_OBJ_SCORE gating of the masks (the official code removed it)
        low_res_multimasks = low_res_multimasks.float()
        high_res_multimasks = F.interpolate(low_res_multimasks, size=(self.image_size, self.image_size),
                                            mode="bilinear", align_corners=False)
        token = tokens[:, 0]
        if multimask_output:
            best = torch.argmax(ious, dim=-1)
            rows = torch.arange(batch, device=best.device)
            low_res_masks = low_res_multimasks[rows, best].unsqueeze(1)
            high_res_masks = high_res_multimasks[rows, best].unsqueeze(1)
            if tokens.size(1) > 1:
                token = tokens[rows, best]
        else:
            low_res_masks, high_res_masks = low_res_multimasks, high_res_multimasks
        obj_ptr = self._gate_object_pointer(self.obj_ptr_proj(token), object_score_logits)
        return (low_res_multimasks, high_res_multimasks, ious, low_res_masks, high_res_masks, obj_ptr,
                object_score_logits)

    def _gate_object_pointer(self, obj_ptr: torch.Tensor, object_score_logits: torch.Tensor) -> torch.Tensor:
        """Stock SAM2 occlusion handling of the object pointer (kept by the official code)."""
        if not self.pred_obj_scores:
            return obj_ptr
        if self.soft_no_obj_ptr:
            appearing = object_score_logits.sigmoid()
        else:
            appearing = (object_score_logits > 0).float()
        if self.fixed_no_obj_ptr:
            obj_ptr = appearing * obj_ptr
        return obj_ptr + (1 - appearing) * self.no_obj_ptr


class StackedOutputs(Mapping):
    """Several objects' `{frame: output}` dicts read as one batch: an output is stacked when read.

    Holds the frames all of them have; only what the memory attention reads is stacked.
    """

    def __init__(self, per_object: Sequence[dict]) -> None:
        self._per_object = per_object
        self._stacked: dict[int, dict] = {}

    def __getitem__(self, frame: int) -> dict:
        if frame not in self._stacked:
            outs = [outputs[frame] for outputs in self._per_object]
            self._stacked[frame] = {
                "maskmem_features": torch.cat([out["maskmem_features"] for out in outs]),
                "maskmem_pos_enc": [torch.cat(level) for level in zip(*(out["maskmem_pos_enc"] for out in outs))],
                "obj_ptr": torch.cat([out["obj_ptr"] for out in outs]),
            }
        return self._stacked[frame]

    def __contains__(self, frame: object) -> bool:
        return all(frame in outputs for outputs in self._per_object)

    def __iter__(self) -> Iterator[int]:
        return (frame for frame in self._per_object[0] if frame in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _row(out: dict, i: int) -> dict:
    """Object i of a batched compact output."""
    return {key: [x[i:i + 1] for x in value] if isinstance(value, list) else
            None if value is None else value[i:i + 1] for key, value in out.items()}


def _memory_dtype(features: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """Stock SAM2 stores memories in bf16; without autocast (CPU) the memory attention needs fp32 back."""
    if features is None or torch.is_autocast_enabled(torch.device(device).type):
        return features
    return features.float()


def _owner_id(inference_state: dict, output_dict: dict) -> int | None:
    """The id of the object whose outputs are `output_dict` (stock SAM2 passes one object's slice)."""
    for obj_idx, outputs in inference_state["output_dict_per_obj"].items():
        if outputs is output_dict:
            return inference_state["obj_idx_to_id"][obj_idx]
    return None


#: key under which a session stores its `FrameWindows` in the SAM2 inference state
WINDOWS_KEY = "auralsam2_windows"
#: key of the objects' text prompts {object id: text} (Ref-AVS)
TEXTS_KEY = "auralsam2_texts"
#: key of the set of object ids whose frames run without audio prompts (the user turned guidance off)
UNGUIDED_KEY = "auralsam2_unguided"
