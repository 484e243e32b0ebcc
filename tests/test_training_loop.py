"""The training loop on the real model (hiera_t at 64 px, random weights): gradients, optimizer
groups, the lr schedule, checkpoints in the official fuser layout, resuming, and the CLI."""
from __future__ import annotations

import csv
import copy

import numpy as np
import pytest
import torch

from napari_auralsam2.cli import main
from napari_auralsam2.core.model import build_auralsam2, load_checkpoint
from napari_auralsam2.core.model.aural_fuser import AuralFuser
from napari_auralsam2.core.sample import render_sample_frames
from napari_auralsam2.core.audio import FrameExamples
from napari_auralsam2.core.video import write_video
from napari_auralsam2.training.contrastive import ContrastiveConfig
from napari_auralsam2.training.datasets import ClipSample, InMemoryClips
from napari_auralsam2.training.train import (
    TrainConfig, Trainer, clip_loss, freeze_for_training, param_groups, poly_lr,
)
from napari_auralsam2.training.transforms import EvalTransform, TrainTransform

SIZE = 64
pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest
#: created for strict loading of the official checkpoints, never called in the forward
UNUSED = ("attn.sr.", "attn.norm.", "mlp.dwconv.", ".g.", "align_channel_back.")


def _sample(seed: int, frames: int = 2) -> ClipSample:
    images, audio, info = render_sample_frames(seconds=frames, fps=1, size=(SIZE, SIZE), seed=seed)
    examples = FrameExamples(audio, np.arange(frames), rule="avsbench")[:]
    return ClipSample(f"clip{seed}", list(images), info.sounding_masks.astype(np.uint8), np.ones(frames, bool),
                      examples)


@pytest.fixture(scope="module")
def model(one_thread):
    torch.manual_seed(0)
    return build_auralsam2("hiera_t", image_size=SIZE)


def test_gradients_reach_only_the_fuser(model):
    trainable = freeze_for_training(model)
    sam_before = copy.deepcopy(model.v_model.state_dict())
    vgg_before = copy.deepcopy(model.aural_fuser.vgg.state_dict())
    fuser_before = {k: v.clone() for k, v in model.aural_fuser.state_dict().items() if not k.startswith("vgg.")}
    optimizer = torch.optim.AdamW(param_groups(model.aural_fuser, 0.05), lr=1e-3)
    total, logged = clip_loss(model, EvalTransform(SIZE)(_sample(0)), ContrastiveConfig(), 1.0)
    total.backward()
    assert set(logged) >= {"loss", "loss_mask", "loss_dice", "loss_iou", "loss_class", "loss_contrastive"}
    assert all(not p.requires_grad and p.grad is None for p in model.v_model.parameters())
    assert all(not p.requires_grad and p.grad is None for p in model.aural_fuser.vgg.parameters())
    no_grad = {n for n, p in model.aural_fuser.named_parameters() if p.requires_grad and p.grad is None}
    assert no_grad and all(any(u in n for u in UNUSED) for n in no_grad)
    used = [p for n, p in model.aural_fuser.named_parameters() if p.requires_grad and n not in no_grad]
    assert len(used) + len(no_grad) == len(trainable)
    assert all(torch.isfinite(p.grad).all() for p in used)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    assert all(torch.equal(v, model.v_model.state_dict()[k]) for k, v in sam_before.items())
    assert all(torch.equal(v, model.aural_fuser.vgg.state_dict()[k]) for k, v in vgg_before.items())
    changed = [k for k, v in fuser_before.items() if not torch.equal(v, model.aural_fuser.state_dict()[k])]
    assert any(k.startswith("f_blocks.") for k in changed) and any(k.startswith("train_proj_a1") for k in changed)


def test_param_groups_follow_the_official_rule():
    fuser = AuralFuser()
    decay, no_decay = param_groups(fuser, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in fuser.named_parameters()}
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert "f_blocks.0.0.norm1.weight" in exempt and "fusion_modules.0.W_z.1.bias" in exempt
    assert "train_proj_v1.proj.1.weight" in exempt  # BatchNorm
    decayed = {names[id(p)] for p in decay["params"]}
    assert "f_blocks.0.0.attn.q.weight" in decayed and "f_blocks.0.0.attn.q.bias" in decayed  # biases decay
    assert not any(n.startswith("vgg.") for n in exempt | decayed)
    assert len(exempt | decayed) == sum(p.requires_grad for p in fuser.parameters())


def test_poly_schedule_is_applied_after_each_step():
    assert poly_lr(1e-4, 0, 100) == poly_lr(1e-4, 1, 100) == 1e-4
    assert poly_lr(1e-4, 2, 100) == pytest.approx(1e-4 * 0.99**0.9)
    assert poly_lr(1e-4, 101, 100) == 0.0


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_trainer_checkpoints_in_the_official_layout_and_resumes(model, tmp_path):
    train = InMemoryClips([_sample(1), _sample(2)], TrainTransform(SIZE, seed=0))
    val = InMemoryClips([_sample(3)], EvalTransform(SIZE))
    config = TrainConfig(data="in-memory", out=str(tmp_path / "run"), model="hiera_t", image_size=SIZE,
                         random_weights=True, epochs=1, accumulate=2, workers=0, progress=False)
    messages = []
    report = Trainer(config, model=model, train_set=train, val_set=val, log=messages.append).fit()
    assert report is not None and 0.0 <= report.summary()["miou"] <= 1.0
    best = torch.load(tmp_path / "run" / "best.pth", weights_only=True)
    assert set(best) == set(AuralFuser().state_dict())  # bare fuser keys, vgg.* and train_proj_* included
    sam2 = tmp_path / "sam2.pt"
    torch.save({"model": model.v_model.state_dict()}, sam2)
    fresh = build_auralsam2("hiera_t", image_size=SIZE)
    assert load_checkpoint(fresh, tmp_path / "run" / "best.pth", sam2) == "fuser"
    assert all(torch.equal(v, fresh.aural_fuser.state_dict()[k]) for k, v in best.items())
    rows = _rows(tmp_path / "run" / "metrics.csv")
    assert [r["split"] for r in rows] == ["train", "val"]
    assert float(rows[0]["loss"]) > 0 and float(rows[0]["lr"]) == pytest.approx(1e-4)
    assert (tmp_path / "run" / "metrics.png").stat().st_size > 0
    resumed = Trainer(TrainConfig(**{**config.__dict__, "epochs": 2, "resume": True}), model=model,
                      train_set=train, val_set=val, log=messages.append)
    assert (resumed.epoch, resumed.step) == (1, 1) and any("resumed" in m for m in messages)
    resumed.fit()
    assert [r["split"] for r in _rows(tmp_path / "run" / "metrics.csv")] == ["train", "val"] * 2


def test_cli_train_then_eval_on_a_napari_export(tmp_path, capsys):
    frames, audio, info = render_sample_frames(seconds=3, fps=2, size=(SIZE, SIZE), seed=4)
    data = tmp_path / "exports"
    data.mkdir()
    write_video(data / "talk.mp4", frames, 2, audio)
    np.savez(data / "talk.npz", labels=info.sounding_masks.astype(np.uint32))
    torch.manual_seed(1)
    weights = build_auralsam2("hiera_t", image_size=SIZE)
    torch.save({"model": weights.v_model.state_dict()}, tmp_path / "sam2.pt")
    torch.save(weights.aural_fuser.vgg.state_dict(), tmp_path / "vggish.pth")
    common = ["--data", str(data), "--model", "hiera_t", "--image-size", str(SIZE), "--clip-len", "2",
              "--sam2-checkpoint", str(tmp_path / "sam2.pt"), "--no-progress"]
    code = main(["train", *common, "--vggish-checkpoint", str(tmp_path / "vggish.pth"), "--out",
                 str(tmp_path / "run"), "--epochs", "1", "--accumulate", "1", "--max-steps", "1", "--workers", "0",
                 "--val-fraction", "0.34"])
    assert code == 0 and (tmp_path / "run" / "best.pth").is_file()
    code = main(["eval", *common, "--checkpoint", str(tmp_path / "run" / "best.pth"), "--split", "all",
                 "--out", str(tmp_path / "eval")])
    assert code == 0
    videos = _rows(tmp_path / "eval" / "per_video.csv")
    assert [v["video"] for v in videos] == ["talk"] and int(videos[0]["frames"]) == 6
    summary = _rows(tmp_path / "eval" / "summary.csv")[0]
    assert {"miou", "fscore", "J", "F", "JF"} <= set(summary)
    assert "miou" in capsys.readouterr().out
    assert main(["train", "--data", str(tmp_path / "nowhere.csv"), "--random-weights"]) == 2
