"""A small docked plot of the audio energy over time, with the current frame marked.

So the user sees when the sound happens before asking the model to follow it. The envelope is
computed off the GUI thread (decoding a long track takes a while); moving the frame slider
only moves a line.
"""
from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QSizePolicy

from ..core.audio import AudioTrack

ENVELOPE_BINS = 800
FLOOR_DB = -60.0
FIGURE_SIZE_IN = (3.2, 1.1)
FIGURE_DPI = 90
MARGINS = {"left": 0.14, "right": 0.95, "bottom": 0.3, "top": 0.95}
CURVE_COLOUR = "#4fc3f7"
MARKER_COLOUR = "#ff5252"
BACKGROUND = "#262930"  # napari's dark theme
FOREGROUND = "#d6d0ce"


def energy_envelope(track: AudioTrack, bins: int = ENVELOPE_BINS) -> tuple[np.ndarray, np.ndarray]:
    """(bin centre times in s, RMS energy in dB below the loudest bin, floored at FLOOR_DB)."""
    mono = track.samples.mean(axis=1)
    bins = max(1, min(bins, mono.size))
    edges = np.linspace(0, mono.size, bins + 1).astype(np.int64)
    power = np.add.reduceat(mono.astype(np.float64) ** 2, edges[:-1]) / np.maximum(np.diff(edges), 1)
    db = 10.0 * np.log10(np.maximum(power, 1e-12) / max(float(power.max()), 1e-12))
    times = (edges[:-1] + edges[1:]) / 2.0 / track.sample_rate
    return times, np.maximum(db, FLOOR_DB)


class AudioPlot(FigureCanvasQTAgg):
    """Energy curve of the chosen sound plus a vertical line at the current frame's time."""

    def __init__(self) -> None:
        figure = Figure(figsize=FIGURE_SIZE_IN, dpi=FIGURE_DPI, facecolor=BACKGROUND)
        figure.subplots_adjust(**MARGINS)  # fixed margins: constrained layout warns at tiny sizes
        super().__init__(figure)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.setFixedHeight(int(FIGURE_SIZE_IN[1] * FIGURE_DPI))
        self.axes = figure.add_subplot()
        self.axes.set_facecolor(BACKGROUND)
        self.axes.tick_params(colors=FOREGROUND, labelsize=7)
        for spine in self.axes.spines.values():
            spine.set_color(FOREGROUND)
        self.axes.set_ylim(FLOOR_DB, 0)
        self.axes.set_xlabel("s", color=FOREGROUND, fontsize=7, loc="right", labelpad=0)
        self.axes.set_ylabel("dB", color=FOREGROUND, fontsize=7, labelpad=1)
        (self.curve,) = self.axes.plot([], [], color=CURVE_COLOUR, linewidth=1)
        self.marker = self.axes.axvline(0.0, color=MARKER_COLOUR, linewidth=1.2)
        self.message = self.axes.text(0.5, 0.5, "no audio", transform=self.axes.transAxes, ha="center",
                                      va="center", color=FOREGROUND, fontsize=8)
        self.frame_times = np.zeros(0)

    def show_energy(self, envelope: tuple[np.ndarray, np.ndarray] | None, frame_times: np.ndarray,
                    note: str = "no audio") -> None:
        """Draw an envelope (or a note when there is no sound) for a video with these frame times."""
        self.frame_times = np.asarray(frame_times, dtype=np.float64)
        end = float(self.frame_times[-1]) if self.frame_times.size else 1.0
        if envelope is None:
            self.curve.set_data([], [])
            self.message.set_text(note)
        else:
            times, db = envelope
            self.curve.set_data(times, db)
            self.message.set_text("")
            end = max(end, float(times[-1]) if times.size else end)
        self.axes.set_xlim(0.0, max(end, 1e-3))
        self.draw_idle()

    def mark_frame(self, frame: int) -> None:
        if 0 <= frame < self.frame_times.size:
            time = float(self.frame_times[frame])
            self.marker.set_xdata([time, time])
            self.draw_idle()

    @property
    def marked_time(self) -> float:
        return float(self.marker.get_xdata()[0])
