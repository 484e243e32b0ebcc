"""Training and evaluation under several processes (torch.distributed, gloo on the CPU).

The processes are started by torchrun's own launcher (`elastic_launch`, what `torchrun
--standalone --nproc-per-node 2` runs), so they join the process group from the environment
torchrun sets, as `auralsam2 train` does under torchrun. Model: hiera_t at 64 px, random weights
(seeded), dropout off so that runs can be compared step by step; data: tiny synthetic clips.
"""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from napari_auralsam2.core.audio import FrameExamples
from napari_auralsam2.core.model import build_auralsam2
from napari_auralsam2.core.sample import render_sample_frames
from napari_auralsam2.training.datasets import ClipSample, InMemoryClips
from napari_auralsam2.training.evaluate import evaluate
from napari_auralsam2.training.train import LAST_NAME, LOGGED_KEYS, VGG_PREFIX, TrainConfig, Trainer
from napari_auralsam2.training.transforms import EvalTransform

SIZE, FRAMES, LR = 64, 2, 1e-3
TRAIN_SEEDS, VAL_SEEDS = range(4), (10, 11, 12)  # 3 validation clips: 2 processes get 2 each (one padded)
pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


def _clip(seed: int, empty_frame: bool = False) -> ClipSample:
    images, audio, info = render_sample_frames(seconds=FRAMES, fps=1, size=(SIZE, SIZE), seed=seed)
    labels = info.sounding_masks.astype(np.uint8)
    if empty_frame:  # exercises the empty-ground-truth rules of the IoU and the F-score
        labels[1] = 0
    examples = FrameExamples(audio, np.arange(FRAMES), rule="avsbench")[:]
    return ClipSample(f"clip{seed}", list(images), labels, np.ones(FRAMES, bool), examples, video=f"video{seed % 2}")


def _data() -> tuple[InMemoryClips, InMemoryClips]:
    transform = EvalTransform(SIZE)
    return (InMemoryClips([_clip(s) for s in TRAIN_SEEDS], transform),
            InMemoryClips([_clip(s, empty_frame=s == VAL_SEEDS[0]) for s in VAL_SEEDS], transform))


def _model():
    torch.manual_seed(0)
    model = build_auralsam2("hiera_t", image_size=SIZE)
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attn_drop", None), float):
            module.attn_drop = 0.0
    return model


def _trainer(out, model, data, epochs: int, accumulate: int, resume: bool = False, log=lambda _: None) -> Trainer:
    # the official contrastive mode's label quirk makes the loss depend on each clip's random sampling
    config = TrainConfig(data="synthetic", out=str(out), model="hiera_t", image_size=SIZE, random_weights=True,
                         epochs=epochs, lr=LR, accumulate=accumulate, workers=0, progress=False, device="cpu",
                         resume=resume, contrastive="official")
    return Trainer(config, model=model, train_set=data[0], val_set=data[1], log=log)


def _weights(model) -> dict[str, torch.Tensor]:
    """The fuser's trainable weights (BatchNorm running statistics are buffers, not weights)."""
    return {k: p.detach().clone() for k, p in model.aural_fuser.named_parameters() if p.requires_grad}


def _train_rows(out) -> list[dict]:
    with open(out / "metrics.csv", newline="") as handle:
        return [r for r in csv.DictReader(handle) if r["split"] == "train"]


def _two_process_worker(out: str) -> dict:
    """One of 2 processes: evaluate the fresh model, then train 1 epoch with 1 clip per process."""
    torch.set_num_threads(1)
    model, data = _model(), _data()
    messages: list[str] = []
    trainer = _trainer(out, model, data, epochs=1, accumulate=1, log=messages.append)
    report = evaluate(model, data[1], progress=False)
    trainer.fit()
    checksum = float(sum(p.double().sum() for p in _weights(model).values()))
    return {"rank": trainer.processes.rank, "backend": torch.distributed.get_backend(), "clips": report.clips,
            "messages": messages, "checksum": checksum}


def _launch(function, *args) -> dict[int, object]:
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=2, run_id="auralsam2-test", rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.2)
    return elastic_launch(config, function)(*args)


@pytest.mark.distributed
def test_two_processes_train_and_evaluate_like_one(tmp_path):
    two = _launch(_two_process_worker, str(tmp_path / "two"))
    assert sorted(two) == [0, 1] and {r["backend"] for r in two.values()} == {"gloo"}
    assert two[0]["checksum"] == two[1]["checksum"]  # DDP keeps the replicas identical
    assert "2 process(es) x 1 clip(s) = effective batch 2" in two[0]["messages"][0] and not two[1]["messages"]

    # one process, the doubled batch: the same loss at every step and the same weights at the end
    data = _data()
    model = _model()
    initial = _weights(model)
    one_eval = evaluate(model, data[1], progress=False)
    _trainer(tmp_path / "one", model, data, epochs=1, accumulate=2).fit()
    rows_one, rows_two = _train_rows(tmp_path / "one"), _train_rows(tmp_path / "two")
    assert len(rows_one) == len(rows_two) == len(TRAIN_SEEDS) // 2  # rank 0 alone wrote the metrics
    for a, b in zip(rows_one, rows_two):
        for key in LOGGED_KEYS:
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5, abs=1e-7), (a["step"], key)
    last_two = torch.load(tmp_path / "two" / LAST_NAME, weights_only=True)
    after_one = _weights(model)
    assert set(after_one) <= set(last_two["fuser"])
    for key, value in after_one.items():
        torch.testing.assert_close(last_two["fuser"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    moved = [k for k, v in initial.items() if not torch.equal(v, after_one[k])]
    assert any(k.startswith("fusion_modules.") for k in moved)

    # evaluation: 2 processes (each half of the clips, one padded) give exactly the 1-process report
    assert two[0]["clips"] == two[1]["clips"] == one_eval.clips
    assert [c.name for c in one_eval.clips] == [f"clip{s}" for s in VAL_SEEDS]

    # resume with another number of processes: the 2-process run continued by 1 process equals 1 process throughout
    resumed = _model()
    _trainer(tmp_path / "two", resumed, data, epochs=2, accumulate=2, resume=True).fit()
    _trainer(tmp_path / "one", model, data, epochs=2, accumulate=2, resume=True).fit()
    rows_one, rows_two = _train_rows(tmp_path / "one"), _train_rows(tmp_path / "two")
    assert len(rows_one) == len(rows_two) == len(TRAIN_SEEDS)
    assert [float(r["loss"]) for r in rows_two] == pytest.approx([float(r["loss"]) for r in rows_one], rel=1e-5)
    for key, value in _weights(model).items():
        torch.testing.assert_close(_weights(resumed)[key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert not any(k.startswith(VGG_PREFIX) for k in last_two["fuser"])
