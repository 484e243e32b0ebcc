"""The model behind the AuralSAM2 interactor function, configured from AURALSAM2_* variables (function.yaml)."""
from napari_auralsam2.cvat.nuclio_handlers import Interactor as ModelHandler

__all__ = ["ModelHandler"]
