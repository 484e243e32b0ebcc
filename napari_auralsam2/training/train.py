"""The AuralSAM2 training loop: only the AuralFuser (without VGGish) learns.

Official recipe (`main.py`, `trainer/train.py`, `utils/utils.py`): SAM2 and VGGish frozen, SAM2
kept in eval mode; AdamW (betas 0.9/0.999, lr 1e-4, weight decay 0.05 except norm layers and
embeddings); one clip per GPU on 4 GPUs with DistributedDataParallel (no SyncBatchNorm: each
clip's BatchNorm statistics are its own); the lr follows ``lr * (1 - i / total) ** 0.9`` after
optimizer step i and is not scaled with the batch; bf16 autocast on CUDA; the loss is the SAM2
mask losses on the supervised frames plus the contrastive loss (weight 1).

Here an optimizer step takes ``accumulate`` clips per process (their gradients accumulated, each
loss divided by it) times the number of processes (under torchrun, DDP averages the gradients
across them): by default 4 clips in all, the official batch, on 1, 2 or 4 processes. Each process
draws its clips from a `DistributedSampler` (shuffled per epoch), so a step sees the same clips
whatever the split into processes, and each clip's contrastive sampling has its own seed (seed,
epoch, clip): N processes x k clips train as 1 process x N*k clips (the same losses and weights,
to float rounding; only the BatchNorm running statistics are rank 0's, which DDP broadcasts).

The best fuser (by validation mIoU, ``iou_select``) is saved as a bare AuralFuser state_dict
(`best.pth`), the layout the official `inference.py` and `core.model.load_checkpoint` read;
`last.pt` holds what resuming needs (the trained fuser weights without the frozen VGGish, the
optimizer, epoch, step, best, effective batch), with any number of processes. Metrics go to
`metrics.csv` and `metrics.png`. Only rank 0 writes.
"""
from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, get_worker_info
from tqdm import tqdm

from ..core.errors import CheckpointError
from ..core.model.auralsam2 import SAM2_CONFIGS, AuralSAM2, build_auralsam2
from ..core.model.checkpoint import load_checkpoint
from . import distributed
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
LOGGED_KEYS = (*LOSS_KEYS, "loss", "loss_contrastive")


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
    accumulate: int | None = None  # clips per process and step; None: 4 / processes (the official 4 in all)
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


def clip_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The contrastive sampling's random stream of one clip in one epoch (the same in any process)."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


class ClipLoss(nn.Module):
    """`clip_loss` as a module: DistributedDataParallel wraps it, so the fuser's use is its forward.

    With ``in_step`` (several processes), a clip without supervised frames gives a zero loss over
    the fuser instead of None, so that every process still runs the backward that DDP synchronises.
    """

    def __init__(self, model: AuralSAM2, contrastive: ContrastiveConfig, contrastive_weight: float,
                 in_step: bool = False) -> None:
        super().__init__()
        self.model = model
        self.contrastive, self.contrastive_weight, self.in_step = contrastive, contrastive_weight, in_step

    def forward(self, clip: ClipTensors, generator: torch.Generator | None = None):
        result = clip_loss(self.model, clip, self.contrastive, self.contrastive_weight, generator)
        if result is None and self.in_step:
            trainable = [p for p in self.model.aural_fuser.parameters() if p.requires_grad]
            return sum(p.sum() for p in trainable) * 0.0, None
        return result if result is not None else (None, None)


class Trainer:
    """Runs `TrainConfig`; `fit()` returns the best validation report."""

    def __init__(self, config: TrainConfig, model: AuralSAM2 | None = None,
                 train_set: ClipDataset | None = None, val_set: ClipDataset | None = None,
                 log: Callable[[str], None] = print) -> None:
        self.config = config
        self.processes, device = distributed.setup(config.device)
        self.log = log if self.processes.main else _quiet
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
        if self.processes.main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.model = (build_model(config) if model is None else model).to(device)
        self.params = freeze_for_training(self.model)
        self.optimizer = torch.optim.AdamW(param_groups(self.model.aural_fuser, config.weight_decay), lr=config.lr,
                                           betas=(0.9, 0.999))
        self.contrastive = ContrastiveConfig(mode=config.contrastive)
        self.loss = ClipLoss(self.model, self.contrastive, config.contrastive_weight, self.processes.distributed)
        world = self.processes.world_size
        if self.processes.distributed:
            # the official DDP: find_unused_parameters (the fuser has modules the forward never calls)
            self.loss = DistributedDataParallel(self.loss, device_ids=[device.index] if device.type == "cuda" else None,
                                                find_unused_parameters=True)
            _seed_process(config.seed + self.processes.rank, self.train_set)  # the official seed + rank
        accumulate = config.accumulate or max(1, OFFICIAL_GPUS // world)
        self.per_step = max(1, min(accumulate, len(self.train_set) // world))
        self.effective_batch = self.per_step * world
        self.steps_per_epoch = max(1, len(self.train_set) // self.effective_batch)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.metrics = MetricsLog(self.out) if self.processes.main else None
        self.epoch, self.step, self.best = 0, 0, -math.inf
        self.log(f"{world} process(es) x {self.per_step} clip(s) = effective batch {self.effective_batch} clips per "
                 f"optimizer step (official: 4 GPUs x 1 clip); lr {config.lr:g}, not scaled with the batch; "
                 f"{device.type}{', ' + distributed.backend() if self.processes.distributed else ''}")
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
        saved_batch = int(state.get("effective_batch", self.effective_batch))
        if saved_batch != self.effective_batch:  # steps of another size: carry on from the epoch reached
            self.step = self.epoch * self.steps_per_epoch
            self.log(f"{path} was trained with an effective batch of {saved_batch} clips, this run uses "
                     f"{self.effective_batch}: the lr schedule continues from epoch {self.epoch} (step {self.step})")
        self.log(f"resumed from {path} at epoch {self.epoch}, step {self.step}")

    def _save_last(self) -> None:
        fuser = {k: v for k, v in self.model.aural_fuser.state_dict().items() if not k.startswith(VGG_PREFIX)}
        state = {"fuser": fuser, "optimizer": self.optimizer.state_dict(), "epoch": self.epoch, "step": self.step,
                 "best": self.best, "effective_batch": self.effective_batch, "config": _plain(asdict(self.config))}
        tmp = self.out / (LAST_NAME + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.out / LAST_NAME)

    def _stop(self) -> bool:
        return self.config.max_steps is not None and self.step >= self.config.max_steps

    def epoch_clips(self) -> list[int]:
        """This process's clips of the epoch, in order: ``per_step`` of them per optimizer step."""
        processes = self.processes
        sampler = DistributedSampler(self.train_set, processes.world_size, processes.rank, shuffle=True,
                                     seed=self.config.seed)
        sampler.set_epoch(self.epoch)
        return list(sampler)[:self.steps_per_epoch * self.per_step]

    def train_epoch(self) -> None:
        config, per_step = self.config, self.per_step
        indices = self.epoch_clips()
        loader = DataLoader(self.train_set, batch_size=None, sampler=indices, num_workers=config.workers,
                            worker_init_fn=_seed_worker)
        clips = zip(indices, loader)
        bar = tqdm(range(self.steps_per_epoch), desc=f"epoch {self.epoch}", leave=False,
                   disable=not (config.progress and self.processes.main))
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
            sums = [0.0] * (1 + len(LOGGED_KEYS))  # clips with a loss, then the sum of each logged loss
            for micro in range(per_step):
                index, clip = next(clips)
                last = micro == per_step - 1
                with nullcontext() if last or not self.processes.distributed else self.loss.no_sync():
                    total, logged = self.loss(clip, clip_generator(config.seed, self.epoch, index))
                    if total is not None:
                        (total / per_step).backward()
                if logged is not None:
                    sums = [a + b for a, b in zip(sums, [1.0, *(logged[k] for k in LOGGED_KEYS)])]
            count, *totals = distributed.sum_all(sums, self.model.device)
            if count:
                self.optimizer.step()
            self.step += 1
            row = {k: v / count for k, v in zip(LOGGED_KEYS, totals)} if count else {}
            if self.metrics is not None:
                self.metrics.add(split="train", step=self.step, epoch=self.epoch, lr=lr,
                                 seconds=time.perf_counter() - started, **row)
            if row:
                bar.set_postfix(loss=f"{row['loss']:.3f}", cl=f"{row['loss_contrastive']:.3f}")

    def validate(self) -> EvalReport:
        report = evaluate(self.model, self.val_set, amp=True, progress=self.config.progress,
                          limit=self.config.val_limit)
        summary = report.summary()
        if self.metrics is not None:
            self.metrics.add(split="val", step=self.step, epoch=self.epoch, miou=summary.get("miou", 0.0),
                             fscore=summary.get("fscore", 0.0), JF=summary.get("JF", 0.0))
        miou = summary.get("miou", 0.0)  # the same on every process: the report is gathered
        if miou > self.best:
            self.best = miou
            if self.processes.main:
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
            if self.processes.main:
                self._save_last()
                self.metrics.plot()
        return report


def _quiet(message: str) -> None:
    """The log of the processes other than rank 0."""


def _seed_process(seed: int, train_set: ClipDataset) -> None:
    """Give a training process its own random streams (dropout, augmentation, data-loader seeds)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    transform = getattr(train_set, "transform", None)
    if hasattr(transform, "reseed"):
        transform.reseed(seed)


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
