"""On a CUDA device (skipped elsewhere; `bench/gpu_check.sh` runs them): the GPU path end to end.

bf16 sessions with audio, clicks, several objects and both directions; CUDA bf16 against CPU fp32
on seeded weights; the GPU frame resize against PIL's; the nuclio functions with
AURALSAM2_DEVICE=cuda; a training step in bf16; an out-of-memory error in the middle of a run;
torch.compile with inductor.
"""
from __future__ import annotations

import copy
import gc
import json
import shutil
import threading

import numpy as np
import pytest
import torch

from napari_auralsam2 import cli
from napari_auralsam2.core import frames_from_array, open_video
from napari_auralsam2.core import masks as codec
from napari_auralsam2.core import session as session_module
from napari_auralsam2.core.audio import FrameExamples
from napari_auralsam2.core.model import build_auralsam2
from napari_auralsam2.core.prefetch import THREAD_NAME
from napari_auralsam2.core.sample import render_sample_frames
from napari_auralsam2.core.session import Engine, SegmentationSession, preprocess_frame

from ._seeded import seeded_inputs, seeded_state_dict

pytestmark = pytest.mark.cuda

IMAGE_SIZE = 256
SIGN_AGREEMENT = 0.99  # cond-frame logits, CUDA bf16 against CPU fp32
MASK_AGREEMENT = 0.99  # masks with the GPU resize against masks with PIL's


def seeded_model(seed: int = 2):
    model = build_auralsam2("hiera_t", image_size=IMAGE_SIZE)
    model.load_state_dict(seeded_state_dict(model.state_dict(), seed=seed))
    return model.eval()


@pytest.fixture(scope="module")
def engines():
    cpu = seeded_model()
    return Engine(cpu, "cpu"), Engine(copy.deepcopy(cpu), "cuda")


def sign_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.float().cpu() > 0) == (b.float().cpu() > 0)).float().mean())


def loader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)]


def test_session_with_audio_clicks_objects_both_ways_in_bf16(engines, sample_mp4, clip_spec):
    _, engine = engines
    with open_video(sample_mp4) as video:
        session = engine.open_session(video)
        session.add_prompt(8, 1, points=[(20.0, 18.0)])
        session.add_prompt(8, 2, points=[(70.0, 40.0)], labels=[1])
        session.add_prompt(14, 3, box=(30.0, 20.0, 70.0, 50.0))
        session.add_audio_prompt(8, 4)
        frames = dict(session.propagate(start_frame=8, direction="both"))
    assert sorted(frames) == list(range(clip_spec.n_frames))
    assert all(set(m) == {1, 2, 3, 4} and m[1].shape == (clip_spec.height, clip_spec.width) and m[1].dtype == bool
               for m in frames.values())
    memory = session.state["output_dict_per_obj"][0]["non_cond_frame_outputs"]
    assert all(out["maskmem_features"].dtype == torch.bfloat16 and out["maskmem_features"].is_cuda
               for out in memory.values())
    assert not loader_threads()


def test_cuda_bf16_agrees_with_cpu_fp32(engines):
    """Official clip forward and the session's audio prompt: cond-frame logits of both devices."""
    cpu, cuda = engines
    frames, audio = seeded_inputs(5, IMAGE_SIZE, seed=0)
    with torch.inference_mode():
        reference = cpu.model.segment_clip(frames, audio).masks[0]
        with cuda.autocast():
            ours = cuda.model.segment_clip(frames.cuda(), audio.cuda()).masks[0]
    agreement = sign_agreement(reference, ours)
    print(f"sign agreement of cond-frame logits, clip forward: {agreement:.4f}")
    assert agreement >= SIGN_AGREEMENT
    images, track, _ = render_sample_frames(1.0, 10, (160, 96), seed=3)
    logits = []
    for engine in engines:
        session = engine.open_session(frames_from_array(images, 10.0, audio=track))
        session.add_audio_prompt(0, 1)
        logits.append(session.state["temp_output_dict_per_obj"][0]["cond_frame_outputs"][0]["pred_masks"])
    agreement = sign_agreement(*logits)
    print(f"sign agreement of cond-frame logits, session audio prompt: {agreement:.4f}")
    assert agreement >= SIGN_AGREEMENT


def test_gpu_resize_masks_agree_with_pil(engines, monkeypatch):
    _, engine = engines
    images, track, info = render_sample_frames(2.0, 10, (640, 360), seed=1)
    ys, xs = np.nonzero(info.masks["disc"][0])
    point = (float(xs.mean()), float(ys.mean()))

    def masks():
        session = engine.open_session(frames_from_array(images, 10.0, audio=track))
        session.add_prompt(0, 1, points=[point])
        return np.stack([m[1] for _, m in session.propagate(direction="forward")])

    on_device = masks()

    def pil(frames: torch.Tensor, size: int) -> torch.Tensor:
        return torch.stack([preprocess_frame(f, size) for f in frames.cpu().numpy()]).to(frames.device)

    monkeypatch.setattr(session_module, "preprocess_on_device", pil)
    with_pil = masks()
    agreement = float((on_device == with_pil).mean())
    print(f"mask agreement, GPU resize vs PIL: {agreement:.5f}")
    assert agreement >= MASK_AGREEMENT


def test_nuclio_functions_on_cuda(sample_mp4, tmp_path, monkeypatch):
    pytest.importorskip("nuclio_sdk")
    from nuclio_sdk import Event
    from nuclio_sdk.test import Platform

    from ._cvat_support import TEST_ENV, encode, load_main, scene

    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(sample_mp4, videos / "task-source.mp4")
    env = dict(TEST_ENV, AURALSAM2_DEVICE="cuda", AURALSAM2_VIDEOS=str(videos),
               AURALSAM2_INDEX_CACHE=str(tmp_path / "index"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    platform = Platform()

    def call(kind, body):
        response = platform.call_handler(load_main(kind).handler, Event(body=body))
        return response.status_code, json.loads(response.body)

    status, reply = call("interactor", {"image": encode(scene()), "pos_points": [[20.5, 18.0]], "neg_points": [],
                                        "obj_bbox": None})
    assert status == 200 and np.asarray(reply["mask"]).shape == (48, 64)
    start = np.zeros((48, 64), bool)
    start[12:30, 10:32] = True
    shape = {"type": "mask", "points": codec.to_rle(start)}
    status, reply = call("tracker", {"image": encode(scene()), "shapes": [shape], "states": []})
    assert status == 200
    for k in range(1, 4):
        status, reply = call("tracker", {"image": encode(scene(shift=k)), "shapes": [None], "states": reply["states"]})
        assert status == 200, reply
    with open_video(videos / "task-source.mp4") as video:
        first = video.frame(0)
    status, reply = call("detector", {"image": encode(first)})
    assert status == 200, reply


def test_one_training_step_in_bf16():
    from napari_auralsam2.training.contrastive import ContrastiveConfig
    from napari_auralsam2.training.datasets import ClipSample
    from napari_auralsam2.training.train import clip_loss, freeze_for_training, param_groups
    from napari_auralsam2.training.transforms import EvalTransform

    torch.manual_seed(0)
    model = build_auralsam2("hiera_t", image_size=128, device="cuda")
    images, audio, info = render_sample_frames(seconds=2, fps=1, size=(128, 128), seed=0)
    examples = FrameExamples(audio, np.arange(2), rule="avsbench")[:]
    clip = EvalTransform(128)(ClipSample("clip", list(images), info.sounding_masks.astype(np.uint8),
                                         np.ones(2, bool), examples))
    freeze_for_training(model)
    optimizer = torch.optim.AdamW(param_groups(model.aural_fuser, 0.05), lr=1e-4)
    before = {k: v.clone() for k, v in model.aural_fuser.state_dict().items()}
    total, logged = clip_loss(model, clip, ContrastiveConfig(), 1.0)
    total.backward()
    optimizer.step()
    assert torch.isfinite(total) and all(np.isfinite(float(v)) for v in logged.values())
    assert any(not torch.equal(v, model.aural_fuser.state_dict()[k]) for k, v in before.items())


def test_out_of_memory_in_the_middle_of_a_run_is_one_line(capsys, sample_mp4, tmp_path, monkeypatch):
    original = SegmentationSession._track_frame

    def exhausting(self, frame_idx, reverse):
        if frame_idx == 3:
            torch.empty(1 << 46, dtype=torch.uint8, device="cuda")  # 64 TiB: a real CUDA out-of-memory
        return original(self, frame_idx, reverse)

    monkeypatch.setattr(SegmentationSession, "_track_frame", exhausting)
    gc.collect()
    torch.cuda.empty_cache()
    resident = torch.cuda.memory_allocated()
    code = cli.main(["segment", str(sample_mp4), "--weights", "random", "--model", "hiera_t", "--image-size", "128",
                     "--device", "cuda", "--direction", "forward", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR and "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("auralsam2: error:")] == [
        "auralsam2: error: the GPU ran out of memory; try a smaller --image-size or --model, or --device cpu"]
    assert not loader_threads()
    gc.collect()
    torch.cuda.empty_cache()
    assert torch.cuda.memory_allocated() <= resident + (64 << 20)  # the run's memory was given back


def test_compile_with_inductor_matches(engines):
    cpu, _ = engines
    engine = Engine(copy.deepcopy(cpu.model), "cuda")
    images, track, _ = render_sample_frames(1.5, 10, (320, 180), seed=2)

    def masks():
        session = engine.open_session(frames_from_array(images, 10.0, audio=track))
        session.add_audio_prompt(0, 1)
        return np.stack([m[1] for _, m in session.propagate(direction="forward")])

    plain = masks()
    engine.compile()
    compiled = masks()
    agreement = float((plain == compiled).mean())
    print(f"mask agreement, compiled vs not (bf16): {agreement:.5f}")
    assert agreement >= MASK_AGREEMENT
