"""The AuralSAM2 training loop: only the AuralFuser (without VGGish) learns.

Official recipe (`main.py`, `trainer/train.py`, `utils/utils.py`): SAM2 and VGGish frozen, SAM2
kept in eval mode; AdamW (betas 0.9/0.999, lr 1e-4, weight decay 0.05 except norm layers and
embeddings); one clip per GPU on 4 GPUs, here emulated by accumulating the gradients of
``accumulate`` clips (each loss divided by it, as DDP averages); the lr follows
``lr * (1 - i / total) ** 0.9`` after optimizer step i; bf16 autocast on CUDA; the loss is the SAM2
mask losses on the supervised frames plus the contrastive loss (weight 1). The best fuser (by
validation mIoU, ``iou_select``) is saved as a bare AuralFuser state_dict (`best.pth`), the layout
the official `inference.py` and `core.model.load_checkpoint` read; `last.pt` holds what resuming
needs (the trained fuser weights without the frozen VGGish, the optimizer, epoch, step, best). Metrics go to `metrics.csv` and `metrics.png`.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, get_worker_info
from tqdm import tqdm

from ..core.errors import CheckpointError
from ..core.model.auralsam2 import SAM2_CONFIGS, AuralSAM2, build_auralsam2
from ..core.model.checkpoint import load_checkpoint
from .clips import DataOptions, open_split
from .contrastive import ContrastiveConfig, contrastive_loss
from .datasets import ClipDataset, DataError, cond_frame
from .evaluate import EvalReport, autocast_for, evaluate
from .losses import LOSS_KEYS, mask_losses
from .report import MetricsLog
from .transforms import ClipTensors, EvalTransform, TrainTransform

BEST_NAME, LAST_NAME = "best.pth", "last.pt"
VGG_PREFIX = "vgg."  # frozen: left out of last.pt (it comes back from the run's --init/--vggish-checkpoint)
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.InstanceNorm1d,
              nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.LocalResponseNorm)
NO_DECAY_NAMES = ("relative_position_bias_table", "pos_embed")
OFFICIAL_GPUS = 4


@dataclass
class TrainConfig:
    """Everything one training run needs (the CLI fills it; defaults are the official recipe)."""

    data: str
    out: str = "runs/auralsam2"
    val_data: str | None = None
    variant: str = "avs"
    model: str = "hiera_l"
    image_size: int = 1024
    sam2_checkpoint: str | None = None
    vggish_checkpoint: str | None = None
    init: str | None = None
    random_weights: bool = False
    epochs: int = 90
    lr: float = 1e-4
    weight_decay: float = 0.05
    poly_power: float = 0.9
    accumulate: int = OFFICIAL_GPUS
    contrastive: str = "paper"
    contrastive_weight: float = 1.0
    jitter: bool = True
    val_every: int = 1
    val_limit: int | None = None
    max_steps: int | None = None
    device: str | None = None
    workers: int = 2
    seed: int = 666
    resume: bool = False
    progress: bool = True
    data_options: DataOptions = field(default_factory=DataOptions)


def build_model(config: TrainConfig) -> AuralSAM2:
    """AuralSAM2 with the configured weights: SAM2 + (VGGish or a fuser checkpoint to start from)."""
    model = build_auralsam2(SAM2_CONFIGS.get(config.model, config.model), image_size=config.image_size,
                            variant=config.variant)
    if config.random_weights:
        return model
    if config.sam2_checkpoint is None and config.init is None:
        raise CheckpointError("training needs SAM2's weights", "pass --sam2-checkpoint sam2_hiera_large.pt "
                              "(or --random-weights for a pipeline check)")
    if config.init is None and config.vggish_checkpoint is None:
        raise CheckpointError("training from scratch needs VGGish's weights",
                              "pass --vggish-checkpoint vggish-10086976.pth, or --init a fuser checkpoint")
    load_checkpoint(model, config.init, config.sam2_checkpoint, config.vggish_checkpoint)
    return model


def freeze_for_training(model: AuralSAM2) -> list[nn.Parameter]:
    """Freeze SAM2 (eval mode) and VGGish; returns the fuser's trainable parameters."""
    model.v_model.requires_grad_(False)
    model.v_model.eval()
    model.aural_fuser.vgg.requires_grad_(False)
    model.aural_fuser.train()
    return [p for p in model.aural_fuser.parameters() if p.requires_grad]


def param_groups(fuser: nn.Module, weight_decay: float) -> list[dict]:
    """The official groups: no weight decay for norm layers, embeddings and position tables."""
    decay, no_decay = [], []
    for module in fuser.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            exempt = isinstance(module, NORM_TYPES + (nn.Embedding,)) or any(n in name for n in NO_DECAY_NAMES)
            (no_decay if exempt else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def poly_lr(base: float, step: int, total: int, power: float = 0.9) -> float:
    """The lr of optimizer step ``step`` (0-based): the official update runs after each step."""
    return base * max(0.0, 1 - max(step - 1, 0) / max(total, 1)) ** power


def clip_loss(model: AuralSAM2, clip: ClipTensors, contrastive: ContrastiveConfig, contrastive_weight: float,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]] | None:
    """Mask + contrastive loss of one training clip (None when no frame is supervised)."""
    keep = clip.supervised
    if not bool(keep.any()):
        return None
    device = model.device
    frames, audio = clip.frames.to(device), clip.audio.to(device)
    labels = clip.labels.to(device)[keep.to(device)]
    keep = keep.to(device)
    size = model.image_size // 16
    with autocast_for(device):
        out = model.segment_clip(frames, audio, cond_frame(len(frames), training=True))
        visual, sounds = model.aural_fuser.project(out.prompts, size=(size, size))
    terms = mask_losses(out.multimask_logits[keep], out.ious[keep], out.object_score_logits[keep], labels)
    best = out.ious.argmax(dim=-1)
    low_res = out.low_res_multimask_logits[torch.arange(len(best), device=device), best]
    cl = contrastive_loss([v[keep] for v in visual], [a[keep] for a in sounds], labels, low_res[keep],
                          contrastive, generator)
    total = terms["total"] + contrastive_weight * cl
    logged = {k: float(terms[k].detach()) for k in LOSS_KEYS}
    logged.update(loss=float(total.detach()), loss_contrastive=float(cl.detach()))
    return total, logged


class Trainer:
    """Runs `TrainConfig`; `fit()` returns the best validation report."""

    def __init__(self, config: TrainConfig, model: AuralSAM2 | None = None,
                 train_set: ClipDataset | None = None, val_set: ClipDataset | None = None,
                 log: Callable[[str], None] = print) -> None:
        self.config = config
        self.log = log
        self.out = Path(config.out)
        options = config.data_options
        if train_set is None:
            train_set = open_split(config.data, "train", options,
                                   TrainTransform(config.image_size, config.jitter, config.seed))
        if val_set is None:
            val_set = open_split(config.val_data or config.data, "val", options, EvalTransform(config.image_size))
        if not len(train_set) or not len(val_set):
            raise DataError(f"no clips to {'train' if not len(train_set) else 'validate'} on",
                            "check --data / --val-data and that some frames are annotated")
        self.train_set, self.val_set = train_set, val_set
        self.out.mkdir(parents=True, exist_ok=True)
        device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = (build_model(config) if model is None else model).to(device)
        self.params = freeze_for_training(self.model)
        self.optimizer = torch.optim.AdamW(param_groups(self.model.aural_fuser, config.weight_decay), lr=config.lr,
                                           betas=(0.9, 0.999))
        self.contrastive = ContrastiveConfig(mode=config.contrastive)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.steps_per_epoch = max(1, len(self.train_set) // config.accumulate)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.metrics = MetricsLog(self.out)
        self.epoch, self.step, self.best = 0, 0, -math.inf
        if config.resume:
            if (self.out / LAST_NAME).is_file():
                self._resume(self.out / LAST_NAME)
            else:
                self.log(f"nothing to resume in {self.out} (no {LAST_NAME}); starting from scratch")

    def _resume(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing, unexpected = self.model.aural_fuser.load_state_dict(state["fuser"], strict=False)
        if unexpected or any(not k.startswith(VGG_PREFIX) for k in missing):
            raise CheckpointError(f"{path} does not match this fuser", "resume with the same --model/--variant")
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step, self.best = int(state["epoch"]), int(state["step"]), float(state["best"])
        self.log(f"resumed from {path} at epoch {self.epoch}, step {self.step}")

    def _save_last(self) -> None:
        fuser = {k: v for k, v in self.model.aural_fuser.state_dict().items() if not k.startswith(VGG_PREFIX)}
        state = {"fuser": fuser, "optimizer": self.optimizer.state_dict(),
                 "epoch": self.epoch, "step": self.step, "best": self.best, "config": _plain(asdict(self.config))}
        tmp = self.out / (LAST_NAME + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.out / LAST_NAME)

    def _stop(self) -> bool:
        return self.config.max_steps is not None and self.step >= self.config.max_steps

    def train_epoch(self) -> None:
        config = self.config
        rng = random.Random(config.seed + self.epoch)
        order = list(range(len(self.train_set)))
        rng.shuffle(order)
        per_step = min(config.accumulate, len(order))
        loader = DataLoader(self.train_set, batch_size=None, sampler=order[:self.steps_per_epoch * per_step],
                            num_workers=config.workers, worker_init_fn=_seed_worker)
        clips = iter(loader)
        bar = tqdm(range(self.steps_per_epoch), desc=f"epoch {self.epoch}", disable=not config.progress, leave=False)
        for _ in bar:
            if self._stop():
                break
            started = time.perf_counter()
            self.model.aural_fuser.train()
            self.model.v_model.eval()
            lr = poly_lr(config.lr, self.step, self.total_steps, config.poly_power)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            logged: list[dict[str, float]] = []
            for _ in range(per_step):
                result = clip_loss(self.model, next(clips), self.contrastive, config.contrastive_weight,
                                   self.generator)
                if result is None:
                    continue
                (result[0] / per_step).backward()
                logged.append(result[1])
            if logged:
                self.optimizer.step()
            self.step += 1
            row = {k: float(np.mean([m[k] for m in logged])) for k in logged[0]} if logged else {}
            self.metrics.add(split="train", step=self.step, epoch=self.epoch, lr=lr,
                             seconds=time.perf_counter() - started, **row)
            if row:
                bar.set_postfix(loss=f"{row['loss']:.3f}", cl=f"{row['loss_contrastive']:.3f}")

    def validate(self) -> EvalReport:
        report = evaluate(self.model, self.val_set, amp=True, progress=self.config.progress,
                          limit=self.config.val_limit)
        summary = report.summary()
        self.metrics.add(split="val", step=self.step, epoch=self.epoch, miou=summary.get("miou", 0.0),
                         fscore=summary.get("fscore", 0.0), JF=summary.get("JF", 0.0))
        miou = summary.get("miou", 0.0)
        if miou > self.best:
            self.best = miou
            torch.save(self.model.aural_fuser.state_dict(), self.out / BEST_NAME)
            self.log(f"step {self.step}: new best mIoU {miou:.4f} -> {self.out / BEST_NAME}")
        else:
            self.log(f"step {self.step}: mIoU {miou:.4f} (best {self.best:.4f})")
        return report

    def fit(self) -> EvalReport | None:
        """Train for the configured epochs (or max_steps), validating every ``val_every`` epochs."""
        report = None
        while self.epoch < self.config.epochs and not self._stop():
            self.train_epoch()
            self.epoch += 1
            if self.epoch % self.config.val_every == 0 or self.epoch == self.config.epochs or self._stop():
                report = self.validate()
            self._save_last()
            self.metrics.plot()
        return report


def _seed_worker(worker_id: int) -> None:
    """Each data-loader worker draws its own augmentations (torch seeds workers differently per epoch)."""
    transform = getattr(get_worker_info().dataset, "transform", None)
    if hasattr(transform, "reseed"):
        transform.reseed(torch.initial_seed())


def _plain(value):
    """Config values as plain types (torch.load(weights_only=True) can read them back)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
