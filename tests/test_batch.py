"""`auralsam2 batch` on a real local Ray (CPU workers, hiera_t at 64 px, seeded weights from a file).

One batch run (module fixture) over 4 good videos (3 from a folder, 1 from a manifest with a click)
and 2 bad ones (garbage, no audio stream), with 2 workers; while it runs, the test kills the
process of the worker that is segmenting a video. The tests then check what that run left: the
same masks as `segment` on each video, the failures recorded, the killed worker's video redone,
and a rerun that skips everything. The rest (manifests, reruns that must not touch folders, no Ray
installed) needs no Ray.
"""
from __future__ import annotations

import csv
import os
import signal
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import napari_auralsam2.batch
from napari_auralsam2 import cli
from napari_auralsam2.batch import cli as batch_cli
from napari_auralsam2.batch import runner
from napari_auralsam2.batch.outputs import MARKER_NAME, PARTIAL_SUFFIX, SUMMARY_NAME
from napari_auralsam2.batch.sources import BatchError, collect_jobs
from napari_auralsam2.core.model import build_auralsam2
from napari_auralsam2.core.sample import render_sample_frames
from napari_auralsam2.core.video import write_video

SIZE, FPS, SECONDS = 64, 4, 2
ENGINE = ["--model", "hiera_t", "--image-size", str(SIZE)]
GOOD = ("alpha", "bravo", "charlie")
PROMPTED, POINT = "delta", "20,20,3"


def _rows(path) -> dict[str, dict]:
    with open(path, newline="") as handle:
        return {os.path.basename(r["output"]): r for r in csv.DictReader(handle)}


class KillOneWorker(runner.Progress):
    """Kills (SIGKILL) the process of the first worker seen working on a (good) video."""

    killed: list[tuple[str, str]] = []

    def update(self, frames):
        super().update(frames)
        for name, (done, total, worker) in frames.items():
            if not self.killed and name in GOOD + (PROMPTED,) and (total == 0 or done < total):
                os.kill(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)
                self.killed.append((name, worker))


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    torch.manual_seed(0)
    torch.save(build_auralsam2("hiera_t", image_size=SIZE).state_dict(), root / "full.pt")
    (root / "good").mkdir()
    (root / "bad").mkdir()
    for seed, name in enumerate(GOOD + (PROMPTED,)):
        frames, audio, _ = render_sample_frames(seconds=SECONDS, fps=FPS, size=(SIZE, 48), seed=seed)
        folder = root / ("good" if name in GOOD else "other")
        folder.mkdir(exist_ok=True)
        write_video(folder / f"{name}.mp4", frames, FPS, audio)
    frames, _, _ = render_sample_frames(seconds=SECONDS, fps=FPS, size=(SIZE, 48), seed=9)
    write_video(root / "bad" / "silent.mp4", frames, FPS)  # no audio stream: fails in audio mode
    (root / "bad" / "garbage.mp4").write_bytes(b"not a video\n" * 100)
    (root / "manifest.csv").write_text(f'video,points\nother/{PROMPTED}.mp4,"{POINT}"\n')
    return root


@pytest.fixture(scope="module")
def batch_run(collection):
    """One batch over everything, with a stale half-written folder of an earlier interrupted run."""
    out = collection / "out"
    stale = out / f".{GOOD[0]}{PARTIAL_SUFFIX}"
    stale.mkdir(parents=True)
    (stale / "half.png").write_bytes(b"")
    args = cli.build_parser().parse_args(
        ["batch", str(collection / "good"), str(collection / "manifest.csv"), str(collection / "bad" / "garbage.mp4"),
         str(collection / "bad" / "silent.mp4"), "--out", str(out), "--workers", "2", "--cpus-per-worker", "1",
         "--checkpoint", str(collection / "full.pt"), "--device", "cpu", *ENGINE])
    os.environ.pop(runner.ADDRESS_ENV, None)
    KillOneWorker.killed = []
    code = batch_cli.run(args, progress=KillOneWorker)
    return code, out, _rows(out / SUMMARY_NAME), list(KillOneWorker.killed)


@pytest.mark.ray
def test_batch_writes_the_same_masks_as_segment(batch_run, collection, tmp_path, capsys):
    code, out, rows, _ = batch_run
    assert code == batch_cli.EXIT_FAILED_VIDEOS  # two bad videos
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker
    try:
        for name in GOOD + (PROMPTED,):
            video = collection / ("good" if name in GOOD else "other") / f"{name}.mp4"
            prompts = ["--point", POINT] if name == PROMPTED else []
            assert cli.main(["segment", str(video), *prompts, "--checkpoint", str(collection / "full.pt"),
                             "--device", "cpu", "--out", str(tmp_path / name), *ENGINE]) == 0
            ours = sorted((out / name / "masks").iterdir())
            theirs = sorted((tmp_path / name / "masks").iterdir())
            assert [p.name for p in ours] == [p.name for p in theirs] and len(ours) == SECONDS * FPS
            for a, b in zip(ours, theirs):
                assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b))), (name, a.name)
            assert rows[name]["status"] == "done" and int(rows[name]["frames"]) == SECONDS * FPS
    finally:
        torch.set_num_threads(threads)
    assert any(np.asarray(Image.open(p)).any() for p in (out / PROMPTED / "masks").iterdir())
    assert not [p for p in out.iterdir() if p.name.endswith(PARTIAL_SUFFIX)]  # the stale one was redone
    assert not (out / GOOD[0] / "half.png").exists()


@pytest.mark.ray
def test_bad_videos_are_recorded_and_the_rest_finish(batch_run):
    _, out, rows, _ = batch_run
    assert {n: r["status"] for n, r in rows.items()} == {
        **{n: "done" for n in GOOD + (PROMPTED,)}, "garbage": "failed", "silent": "failed"}
    assert "cannot read garbage.mp4" in rows["garbage"]["error"]
    assert "no audio" in rows["silent"]["error"].lower()
    assert all("\n" not in r["error"] for r in rows.values())
    assert not (out / "garbage").exists() and not (out / "silent").exists()


@pytest.mark.ray
def test_a_killed_worker_is_replaced_and_its_video_redone(batch_run):
    _, out, rows, killed = batch_run
    assert len(killed) == 1, "no worker was caught working on a video"
    _, worker = killed[0]
    # the video that worker was on (the one seen, or its next if it had just finished that) was redone
    (name,) = [n for n, r in rows.items() if r["attempts"] == "2"]
    assert rows[name]["status"] == "done" and rows[name]["worker"] != worker  # by the restarted process
    assert (out / name / MARKER_NAME).is_file()
    assert all(r["attempts"] == "1" for n, r in rows.items() if n != name)


@pytest.mark.ray
def test_rerun_skips_every_finished_video(batch_run, collection, capsys):
    _, out, _, _ = batch_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    code = cli.main(["batch", str(collection / "good"), str(collection / "manifest.csv"), "--out", str(out),
                     "--checkpoint", str(collection / "full.pt"), "--device", "cpu", *ENGINE])
    assert code == 0
    rows = _rows(out / SUMMARY_NAME)
    assert {n: r["status"] for n, r in rows.items()} == {n: "skipped" for n in GOOD + (PROMPTED,)}
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == before
    header, counts = capsys.readouterr().out.splitlines()[:2]
    assert dict(zip(header.split(), counts.split())) | {"seconds": "-"} == {
        "videos": "4", "done": "0", "skipped": "4", "failed": "0", "frames": "0", "seconds": "-"}


# -- without Ray ----------------------------------------------------------------------------------
def test_rerun_never_touches_a_folder_that_is_not_its_own(collection, tmp_path, capsys):
    out = tmp_path / "out"
    (out / GOOD[0]).mkdir(parents=True)
    (out / GOOD[0] / "mine.txt").write_text("a user's file")
    code = cli.main(["batch", str(collection / "good" / f"{GOOD[0]}.mp4"), "--out", str(out), "--weights",
                     "random", *ENGINE])
    assert code == batch_cli.EXIT_FAILED_VIDEOS
    row = _rows(out / SUMMARY_NAME)[GOOD[0]]
    assert row["status"] == "failed" and "not written by auralsam2 batch" in row["error"]
    assert (out / GOOD[0] / "mine.txt").read_text() == "a user's file"


@pytest.mark.ray
def test_rerun_with_another_format_is_refused_per_video(batch_run, collection):
    _, out, _, _ = batch_run
    code = cli.main(["batch", str(collection / "good"), "--out", str(out), "--format", "npz",
                     "--checkpoint", str(collection / "full.pt"), *ENGINE])
    assert code == batch_cli.EXIT_FAILED_VIDEOS
    rows = _rows(out / SUMMARY_NAME)
    assert all(r["status"] == "failed" and "'format': 'png'" in r["error"] for r in rows.values())
    assert not list(out.rglob("masks.npz"))


def test_sources_folders_globs_and_manifests(collection, tmp_path):
    jobs = collect_jobs([str(collection / "good"), str(collection / "**" / "*.mp4")])
    assert [job.name for job in jobs] == [*GOOD, "garbage", "silent", PROMPTED]  # folder first, then the glob's
    assert all(job.prompts == [] and job.audio is None for job in jobs)
    manifest = tmp_path / "m.csv"
    manifest.write_text("video,audio,points,boxes\na.mp4,a.wav,\"1,2,0;3,4,0,0,2\",\"0,0,5,5,0,2\"\n")
    (job,) = collect_jobs([str(manifest)])
    assert job.video == tmp_path / "a.mp4" and job.audio == tmp_path / "a.wav"
    assert [(p.frame, p.object_id, p.points, p.labels, p.box) for p in job.prompts] == [
        (0, 1, [(1.0, 2.0)], [1], None), (0, 2, [(3.0, 4.0)], [0], (0.0, 0.0, 5.0, 5.0))]
    (tmp_path / "same").mkdir()
    (tmp_path / "same" / "a.mp4").write_bytes(b"")
    (tmp_path / "a.mp4").write_bytes(b"")
    first, second = collect_jobs([str(tmp_path / "a.mp4"), str(tmp_path / "same" / "a.mp4")])
    assert first.name != second.name and first.name.startswith("a-") and second.name.startswith("a-")


@pytest.mark.parametrize("content, needle", [
    ("path,points\nx.mp4,\n", "'video'"),
    ("video,colour\nx.mp4,red\n", "unknown column(s) colour"),
    ("video,points\nx.mp4,\"1,2\"\n", "m.csv line 2: point '1,2'"),
    ("video,boxes\nx.mp4,\"1,2,3,4,0\"\n,\n", "m.csv line 3: the video cell is empty"),
    ("video\n", "lists no videos"),
])
def test_bad_manifest_is_one_line_naming_the_line(tmp_path, capsys, content, needle):
    (tmp_path / "m.csv").write_text(content)
    code = cli.main(["batch", str(tmp_path / "m.csv"), "--out", str(tmp_path / "out"), "--weights", "random"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("auralsam2: error:")]
    assert needle in line


def test_empty_folder_glob_and_conflicting_listing_are_errors(collection, tmp_path):
    with pytest.raises(BatchError, match="holds no videos"):
        collect_jobs([str(tmp_path)])
    with pytest.raises(BatchError, match="no videos match"):
        collect_jobs([str(tmp_path / "*.mp4")])
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"video,points\n{collection / 'good' / 'alpha.mp4'},\"1,1,0\"\n")
    with pytest.raises(BatchError, match="listed twice with different audio or prompts"):
        collect_jobs([str(collection / "good"), str(manifest)])


def test_no_audio_needs_prompts_for_every_video(collection, tmp_path, capsys):
    code = cli.main(["batch", str(collection / "good"), "--out", str(tmp_path), "--no-audio", "--weights", "random"])
    assert code == cli.EXIT_ERROR and "with --no-audio every video needs points or boxes" in capsys.readouterr().err


def test_without_ray_the_command_says_how_to_install_it(collection, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray looks like to `import`
    monkeypatch.delitem(sys.modules, "napari_auralsam2.batch.runner")
    monkeypatch.delattr(napari_auralsam2.batch, "runner")
    code = cli.main(["batch", str(collection / "good"), "--out", str(tmp_path), "--weights", "random"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR
    assert "pip install 'napari-auralsam2[batch]'" in err and "Traceback" not in err


def test_compile_reaches_every_worker_engine(tmp_path, monkeypatch):
    """--compile is one of the engine options batch shares with segment: each worker compiles its engine."""
    from napari_auralsam2.batch.worker import VideoWorker
    from napari_auralsam2.core.session import Engine

    compiled = []
    monkeypatch.setattr(Engine, "compile", lambda engine: compiled.append(engine))
    args = cli.build_parser().parse_args(["batch", str(tmp_path), "--out", str(tmp_path / "out"), "--compile",
                                          "--model", "hiera_t", "--image-size", "64", "--weights", "random",
                                          "--device", "cpu"])
    settings = batch_cli._settings(args, tmp_path / "out", local=True)
    worker = VideoWorker(settings)
    assert settings.compile and worker.ready() is None and compiled == [worker.engine]
