"""nuclio entry point of the AuralSAM2 interactor for CVAT; the logic lives in napari_auralsam2.cvat."""
from model_handler import ModelHandler

from napari_auralsam2.cvat.nuclio_handlers import handle


def init_context(context):
    context.user_data.model = ModelHandler.from_env(context.logger)
    context.logger.info("AuralSAM2 interactor ready")


def handler(context, event):
    return handle(context, event)
