"""`auralsam2 train` and `auralsam2 eval`: the training package's subcommands.

`napari_auralsam2.cli` calls `add_parser(subparsers)`; each command's ``func(args)`` returns the
exit code and raises `AuralSAM2Error` (one actionable line) on bad input. Values that cannot work
are refused while parsing (every number has bounds), and the data, the output folder and the
checkpoint paths are checked before any model is built.
"""
from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

import numpy as np
import torch

from ..core.model.auralsam2 import SAM2_CONFIGS, VARIANTS, build_auralsam2
from ..core.files import check_outputs, check_writable
from ..core.model.checkpoint import existing_checkpoint, load_checkpoint
from ..core.weights import RANDOM_WEIGHTS_BANNER, ensure_text_model
from .clips import DEFAULT_CLIP_LEN, DataOptions, open_split
from . import distributed
from .contrastive import MODES
from .datasets import SUBSETS, DataError
from .evaluate import DECODES, PER_VIDEO_CSV, SUMMARY_CSV, evaluate
from .refavs import PER_CLIP_CSV as REF_PER_CLIP_CSV
from .refavs import SPLITS as REF_SPLITS
from .refavs import SUMMARY_CSV as REF_SUMMARY_CSV
from .refavs import RefAVSDataset, evaluate_refavs, is_refavs_root, write_reports
from .report import CSV_NAME, PLOT_NAME
from .train import BEST_NAME, LAST_NAME, OFFICIAL_GPUS, TrainConfig, Trainer
from .transforms import EvalTransform

DEFAULT_MODEL, DEFAULT_IMAGE_SIZE = "hiera_l", 1024
IMAGE_SIZE_STEP = 32  # Hiera's total stride (a multiple of 16 that is not of 32 fails in SAM2)
MAX_IMAGE_SIZE = 4096
MAX_CLIP_LEN = 100  # frames of one clip go through SAM2 together
MAX_COUNT = 1_000_000  # epochs, steps, clips per step, ...
MAX_WORKERS = 64
MAX_SEED = 2**32 - 1  # numpy's seed range

TRAIN_EPILOG = """examples:
  # reproduce AuralSAM2 (v2 recipe: v1s+v1m+v2, 90 epochs; use --subsets v1s or v1m and --epochs 140 for those)
  auralsam2 train --data AVSBench --sam2-checkpoint sam2_hiera_large.pt --vggish-checkpoint vggish-10086976.pth
  # fine-tune the released fuser on your own napari/CVAT annotations (folder of <name>.mp4 + <name>.npz|.xml|.json)
  auralsam2 train --data my_exports --init auralsam2_avs_v2.pth --sam2-checkpoint sam2_hiera_large.pt --epochs 20
"""


def _integer(text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"expected a whole number from {low} to {high}, got {value}")
    return value


def _number(low: float, high: float, high_open: bool = False):
    """A float type for argparse: finite, in [low, high] (or [low, high))."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and low <= value and (value < high if high_open else value <= high)):
            closing = ")" if high_open else "]"
            raise argparse.ArgumentTypeError(f"expected a number in [{low:g}, {high:g}{closing}, got {text!r}")
        return value
    return parse


def _image_size(text: str) -> int:
    value = _integer(text, 2 * IMAGE_SIZE_STEP, MAX_IMAGE_SIZE)
    if value % IMAGE_SIZE_STEP:
        raise argparse.ArgumentTypeError(f"image size must be a multiple of {IMAGE_SIZE_STEP}, got {value}")
    return value


def _positive(text: str) -> int:
    return _integer(text, 1, MAX_COUNT)


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="AVSBench root, folder of exports, or manifest .csv")
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=list(SAM2_CONFIGS), help="SAM2 size (default hiera_l)")
    parser.add_argument("--image-size", type=_image_size, default=DEFAULT_IMAGE_SIZE, help="square input size (1024)")
    parser.add_argument("--variant", default="avs", choices=VARIANTS,
                        help="fuser variant (avs; Ref-AVS data is evaluated as refavs)")
    parser.add_argument("--sam2-checkpoint", help="SAM2 weights (sam2_hiera_large.pt for the released models)")
    parser.add_argument("--random-weights", action="store_true", help="random SAM2/VGGish (pipeline checks only)")
    parser.add_argument("--subsets", type=_names, default=list(SUBSETS), help="AVSBench subsets (v1s,v1m,v2)")
    parser.add_argument("--objects", type=_names, help="sounding objects in exports: label ids or names (all)")
    parser.add_argument("--clip-len", type=lambda t: _integer(t, 2, MAX_CLIP_LEN), default=DEFAULT_CLIP_LEN,
                        help="frames per clip (5)")
    parser.add_argument("--stride", type=_positive, default=1, help="take every n-th video frame (fps: 1 frame/s)")
    parser.add_argument("--val-fraction", type=_number(0, 1, high_open=True), default=0.2,
                        help="exports: held-out tail of each video's annotated frames (0.2)")
    parser.add_argument("--device", help="cuda / cpu (default: cuda when available)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def add_parser(subparsers) -> None:
    """Register `train` and `eval` on the `auralsam2` command's subparsers."""
    train = subparsers.add_parser("train", help="train/fine-tune the AuralFuser (SAM2 and VGGish frozen)",
                                  description="Train the AuralFuser with the official recipe.",
                                  epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(train)
    train.add_argument("--out", default="runs/auralsam2", help="run folder (best.pth, last.pt, metrics.csv/png)")
    train.add_argument("--val-data", help="validation data (default: --data's test split / held-out tail)")
    train.add_argument("--vggish-checkpoint", help="VGGish weights (vggish-10086976.pth) when training from scratch")
    train.add_argument("--init", help="fuser (or full-model) checkpoint to start from")
    train.add_argument("--epochs", type=_positive, default=90, help="90 (v2); the paper used 140 for v1s/v1m")
    train.add_argument("--lr", type=_number(0, 1), default=1e-4, help="base learning rate (1e-4)")
    train.add_argument("--weight-decay", type=_number(0, 1), default=0.05)
    train.add_argument("--accumulate", type=_positive,
                       help=f"clips per process and optimizer step (default: {OFFICIAL_GPUS} / processes, "
                            f"the official {OFFICIAL_GPUS} GPUs x 1 clip)")
    train.add_argument("--contrastive", choices=MODES, default="paper",
                       help="'paper' (default) or 'official' (the released code, bugs included)")
    train.add_argument("--contrastive-weight", type=_number(0, 1000), default=1.0)
    train.add_argument("--official-jitter", dest="jitter", action="store_false",
                       help="skip colour jitter, as the released code (whose jitter is a no-op) does")
    train.add_argument("--val-every", type=_positive, default=1, help="validate every n epochs")
    train.add_argument("--val-limit", type=_positive, help="validate on the first n clips only")
    train.add_argument("--max-steps", type=_positive, help="stop after n optimizer steps")
    train.add_argument("--workers", type=lambda t: _integer(t, 0, MAX_WORKERS), default=2,
                       help="data-loading worker processes (2; 0 = load in the main process)")
    train.add_argument("--seed", type=lambda t: _integer(t, 0, MAX_SEED), default=666)
    train.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    train.set_defaults(func=run_train)

    ev = subparsers.add_parser("eval", help="AVSBench / Ref-AVS mIoU, F-score (J&F, S) of a checkpoint",
                               description="Evaluate AuralSAM2 as the official validation does.")
    _add_common(ev)
    ev.add_argument("--checkpoint", help="fuser or full-model checkpoint (e.g. runs/auralsam2/best.pth)")
    ev.add_argument("--split", default="test",
                    help="test / val / train, or 'all' clips of exports; Ref-AVS: test_s / test_u / test_n, "
                         "test = all three (test)")
    ev.add_argument("--text-model", help="Ref-AVS: folder of distilroberta-base (default: the pinned Hub copy)")
    ev.add_argument("--decode", choices=DECODES, default="iou_select", help="mask decoding (iou_select)")
    ev.add_argument("--out", default="eval_out", help="folder for per_video.csv and summary.csv")
    ev.add_argument("--limit", type=_positive, help="evaluate the first n clips only")
    ev.set_defaults(func=run_eval)


def _options(args: argparse.Namespace) -> DataOptions:
    return DataOptions(subsets=tuple(args.subsets), objects=args.objects, clip_len=args.clip_len,
                       stride=args.stride, val_fraction=args.val_fraction)


def _check_files(args: argparse.Namespace, *names: str) -> None:
    """The checkpoint options given are files (before anything is built)."""
    for name in names:
        if getattr(args, name, None):
            existing_checkpoint(getattr(args, name))


def _prepare_out(out: Path, outputs: tuple[str, ...], args: argparse.Namespace) -> None:
    """No output may be an input; the folder must take files (checked before data and model load)."""
    inputs = {f"--{name.replace('_', '-')}": getattr(args, name, None)
              for name in ("data", "val_data", "init", "checkpoint", "sam2_checkpoint", "vggish_checkpoint")}
    check_outputs({f"the run's {name}": out / name for name in outputs}, inputs)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create output folder {out}: {err.strerror or err}") from None
    check_writable(out)


def run_train(args: argparse.Namespace) -> int:
    if args.variant == "refavs":
        raise DataError("training the Ref-AVS variant is not supported yet", "evaluate it with auralsam2 eval")
    out = Path(args.out).expanduser()
    earlier = [name for name in (BEST_NAME, LAST_NAME, CSV_NAME) if (out / name).exists()]
    if earlier and not args.resume:
        raise DataError(f"{out} holds an earlier training run ({', '.join(earlier)})",
                        "continue it with --resume, or give a new --out")
    _check_files(args, "init", "sam2_checkpoint", "vggish_checkpoint")
    _prepare_out(out, (BEST_NAME, CSV_NAME, PLOT_NAME) + (() if args.resume else (LAST_NAME,)), args)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.random_weights:
        print(RANDOM_WEIGHTS_BANNER)
    config = TrainConfig(
        data=args.data, out=args.out, val_data=args.val_data, variant=args.variant, model=args.model,
        image_size=args.image_size, sam2_checkpoint=args.sam2_checkpoint, vggish_checkpoint=args.vggish_checkpoint,
        init=args.init, random_weights=args.random_weights, epochs=args.epochs, lr=args.lr,
        weight_decay=args.weight_decay, accumulate=args.accumulate, contrastive=args.contrastive,
        contrastive_weight=args.contrastive_weight, jitter=args.jitter, val_every=args.val_every,
        val_limit=args.val_limit, max_steps=args.max_steps, device=args.device, workers=args.workers,
        seed=args.seed, resume=args.resume, progress=args.progress, data_options=_options(args))
    trainer = Trainer(config)
    trainer.log(f"training {sum(p.numel() for p in trainer.params) / 1e6:.1f}M fuser parameters on "
                f"{len(trainer.train_set)} clips ({trainer.steps_per_epoch} steps/epoch), validating on "
                f"{len(trainer.val_set)} clips; writing {Path(args.out)}")
    report = trainer.fit()
    if report is not None:
        trainer.log(report.table())
    trainer.log(f"best mIoU {trainer.best:.4f}: {Path(args.out) / BEST_NAME}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    if args.random_weights:
        print(RANDOM_WEIGHTS_BANNER)
    elif args.checkpoint is None:
        raise DataError("eval needs --checkpoint (a fuser or full-model file)", "or --random-weights")
    _check_files(args, "checkpoint", "sam2_checkpoint")
    if is_refavs_root(args.data):
        _prepare_out(Path(args.out).expanduser(), (REF_PER_CLIP_CSV, REF_SUMMARY_CSV), args)
        return run_refavs_eval(args)
    if args.variant == "refavs":
        raise DataError("the refavs variant reads a text per clip: evaluate it on Ref-AVS data",
                        "give the REFAVS folder (metadata.csv, media/, gt_mask/)")
    _prepare_out(Path(args.out).expanduser(), (PER_VIDEO_CSV, SUMMARY_CSV), args)
    dataset = open_split(args.data, args.split, _options(args), EvalTransform(args.image_size))
    processes, device = distributed.setup(args.device)  # under torchrun: each process evaluates a share
    model = build_auralsam2(SAM2_CONFIGS[args.model], image_size=args.image_size, variant=args.variant)
    if not args.random_weights:
        load_checkpoint(model, args.checkpoint, args.sam2_checkpoint)
    model = model.to(device).eval()
    report = evaluate(model, dataset, decode=args.decode, progress=args.progress, limit=args.limit)
    if processes.main:
        per_video, summary = report.write(args.out)
        print(report.table())
        print(f"wrote {per_video} and {summary}")
    return 0


def run_refavs_eval(args: argparse.Namespace) -> int:
    """`auralsam2 eval` on a Ref-AVS root: test_s / test_u (mIoU, F-score) and test_n (S)."""
    splits = REF_SPLITS if args.split == "test" else (args.split,)
    if not set(splits) <= set(REF_SPLITS):
        raise DataError(f"unknown Ref-AVS split {args.split!r}", f"use test or one of {', '.join(REF_SPLITS)}")
    datasets = [RefAVSDataset(args.data, split, EvalTransform(args.image_size)) for split in splits]
    text_model = args.text_model
    if text_model is None and not args.random_weights:
        text_model = ensure_text_model()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = build_auralsam2(SAM2_CONFIGS[args.model], image_size=args.image_size, variant="refavs",
                            text_model=text_model)
    if not args.random_weights:
        load_checkpoint(model, args.checkpoint, args.sam2_checkpoint)
    model = model.to(device).eval()
    reports = [evaluate_refavs(model, dataset, decode=args.decode, progress=args.progress, limit=args.limit)
               for dataset in datasets]
    for report in reports:
        print(report.table())
    per_clip, summary = write_reports(reports, args.out)
    print(f"wrote {per_clip} and {summary}")
    return 0
