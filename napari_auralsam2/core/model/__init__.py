"""AuralSAM2 model: the AuralFuser and its integration with SAM2."""
from .aural_fuser import AuralFuser, FuserOutput
from .auralsam2 import SAM2_CONFIGS, AuralSAM2, ClipOutput, build_auralsam2
from .checkpoint import load_checkpoint, read_state_dict, remap_legacy_keys
from .predictor import AuralSAM2Predictor

__all__ = ["AuralFuser", "FuserOutput", "AuralSAM2", "ClipOutput", "build_auralsam2", "SAM2_CONFIGS",
           "load_checkpoint", "read_state_dict", "remap_legacy_keys", "AuralSAM2Predictor"]
