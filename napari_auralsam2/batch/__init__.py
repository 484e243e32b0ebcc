"""`auralsam2 batch`: pre-annotate a collection of videos on Ray (a host, like the CLI).

* `sources`: videos from files, folders, globs or a CSV manifest (with optional audio and prompts).
* `outputs`: one folder per video, written under a temporary name and renamed when complete;
  the skip rule for reruns and ``summary.csv``.
* `worker`: what one worker does with one video (the `segment` command's steps); no Ray here.
* `runner`: the Ray side: a local or existing cluster, one actor per worker, progress, retries.
* `cli`: the subcommand (Ray is imported only when it runs: `pip install "napari-auralsam2[batch]"`).
"""
