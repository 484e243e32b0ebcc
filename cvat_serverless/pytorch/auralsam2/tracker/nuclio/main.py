"""nuclio entry point of the AuralSAM2 tracker for CVAT; the logic lives in napari_auralsam2.cvat."""
from model_handler import ModelHandler

from napari_auralsam2.cvat.nuclio_handlers import handle


def init_context(context):
    context.user_data.model = ModelHandler.from_env(context.logger)
    context.logger.info("AuralSAM2 tracker ready")


def handler(context, event):
    return handle(context, event)
