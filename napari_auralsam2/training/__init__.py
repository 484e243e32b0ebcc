"""Training and evaluation of AuralSAM2's AuralFuser (SAM2 and VGGish stay frozen).

* `losses` / `contrastive`: SAM2's multimask losses and the audio-guided contrastive loss
  (paper behaviour by default, ``mode="official"`` for the released code's).
* `datasets` / `clips` / `exports` / `transforms`: AVSBench, annotated videos (napari Labels,
  CVAT XML, COCO), clip tiling and the official augmentations.
* `train` / `evaluate` / `metrics` / `report`: the loop, AVSBench metrics and J&F, CSV + plot.
* `cli`: the `auralsam2 train` and `auralsam2 eval` subcommands.
"""
