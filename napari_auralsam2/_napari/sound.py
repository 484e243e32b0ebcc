"""The widget's sound controls: hear the video with napari's slider, or the moment the model hears.

Both are disabled, with a tooltip saying why, where no sound can play (no `sound` extra, no
PortAudio, no output device); see `playback.py`.
"""
from __future__ import annotations

from typing import Callable, Sequence

from magicgui.widgets import CheckBox, Container, PushButton

from ..core.audio import AudioTrack
from .playback import Player, available, connect_viewer


class SoundControls:
    """'Play sound with the slider' and 'Play this moment' for the current video's sound."""

    def __init__(self, viewer, current_frame: Callable[[], int | None], backend=None) -> None:
        self.viewer = viewer
        self.current_frame = current_frame
        self.backend = backend
        self.follow = CheckBox(text="sound with the slider",
                               tooltip="Play the video's sound in step when napari's frame slider plays")
        self.moment = PushButton(text="Play this moment", tooltip="Play the 0.96 s of sound the model hears "
                                                                  "for the current frame")
        self.container = Container(widgets=[self.follow, self.moment], layout="horizontal", labels=False)
        self.container.margins = (0, 0, 0, 0)
        self.player: Player | None = None
        self._disconnect: Callable[[], None] | None = None
        ok, why = available(backend)
        if not ok:
            for control in (self.follow, self.moment):
                control.enabled = False
                control.tooltip = why
        self.usable = ok
        self.follow.changed.connect(self._follow_changed)
        self.moment.clicked.connect(self.play_moment)

    def set_sound(self, track: AudioTrack | None, frame_times: Sequence[float], fps: float) -> None:
        """The sound to play (None: the video has none), replacing the previous one."""
        self.close()
        if self.usable and track is not None:
            self.player = Player(track, frame_times, fps, backend=self.backend)
            self._follow_changed()
        self.moment.enabled = self.follow.enabled = self.usable and track is not None

    def _follow_changed(self, *_) -> None:
        if self._disconnect is not None:
            self._disconnect()
            self._disconnect = None
        if self.player is not None and self.follow.value:
            self._disconnect = connect_viewer(self.player, self.viewer)

    def play_moment(self) -> None:
        frame = self.current_frame()
        if self.player is not None and frame is not None:
            self.player.play_moment(frame)

    def close(self) -> None:
        """Stop the sound and let go of the viewer."""
        if self._disconnect is not None:
            self._disconnect()
            self._disconnect = None
        if self.player is not None:
            self.player.close()
            self.player = None
