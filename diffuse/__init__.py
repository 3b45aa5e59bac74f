"""diffuse: train text-to-image diffusion models on a laptop CPU, generate and explain images."""

from .errors import CheckpointError, DataError, DiffuseError, RequestError
from .export import save_png
from .pipeline import GenerateRequest, Pipeline

__all__ = ["Pipeline", "GenerateRequest", "save_png", "DiffuseError", "DataError", "CheckpointError", "RequestError"]
__version__ = "0.1.0"
