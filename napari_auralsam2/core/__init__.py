"""Host-free engine of napari-auralsam2: model, audio/video I/O, the segmentation session.

Nothing here imports napari, Qt, magicgui, cvat_sdk or nuclio_sdk.
"""
from .audio import AudioTrack, waveform_to_examples
from .errors import AuralSAM2Error
from .model import AuralSAM2, build_auralsam2, load_checkpoint
from .session import Engine, Prompt, SegmentationSession
from .video import VideoSource, frames_from_array, load_audio, open_video
from .weights import RANDOM_WEIGHTS_BANNER, load_engine

__all__ = ["AudioTrack", "waveform_to_examples", "AuralSAM2Error", "AuralSAM2", "build_auralsam2", "load_checkpoint",
           "Engine", "Prompt", "SegmentationSession", "VideoSource", "frames_from_array", "load_audio", "open_video",
           "RANDOM_WEIGHTS_BANNER", "load_engine"]
