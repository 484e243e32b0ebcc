"""A stand-in for the sounddevice module (nothing can play sound here): the test plays the device's part."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

RATE = 8_000


class CallbackStop(Exception):
    """sounddevice.CallbackStop"""


class PortAudioError(Exception):
    """sounddevice.PortAudioError"""


class OutputStream:
    """sounddevice.OutputStream's constructor, state and methods; `pump(n)` is the sound card asking for n frames."""

    def __init__(self, samplerate=None, blocksize=None, device=None, channels=None, dtype=None, latency=None,
                 extra_settings=None, callback=None, finished_callback=None, clip_off=None, dither_off=None,
                 never_drop_input=None, prime_output_buffers_using_stream_callback=None):
        if samplerate not in Backend.rates:
            raise PortAudioError("Error opening OutputStream: Invalid sample rate [PaErrorCode -9997]")
        self.samplerate, self.channels, self.dtype = float(samplerate), channels, dtype
        self.callback = callback
        self.stopped, self.active, self.closed, self.called_back = True, False, False, True
        Backend.streams.append(self)

    def start(self):
        if self.stopped:  # PortAudio ignores start() on a stream that was not stopped
            self.stopped, self.active, self.called_back = False, True, True

    def stop(self, ignore_errors=True):
        self.stopped, self.active = True, False

    def close(self, ignore_errors=True):
        self.stop()
        self.closed = True

    def pump(self, frames: int) -> np.ndarray:
        """What the device plays next: the callback's block, silence once stopped or after CallbackStop."""
        out = np.zeros((frames, self.channels), np.float32)
        if self.active and self.called_back:
            try:
                self.callback(out, frames, SimpleNamespace(outputBufferDacTime=0.0), 0)
            except CallbackStop:
                self.called_back, self.active = False, False  # the block still plays; no more callbacks
        return out


class Backend:
    """The parts of the sounddevice module the player uses."""

    rates = (RATE, 48_000)
    streams: list[OutputStream] = []
    OutputStream = OutputStream
    CallbackStop = CallbackStop
    PortAudioError = PortAudioError

    @staticmethod
    def query_devices(device=None, kind=None):
        return {"name": "stand-in", "max_output_channels": 2, "default_samplerate": 48_000.0}
