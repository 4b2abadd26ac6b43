"""The model zoo: depthwise-separable CNNs and mobile vision transformers built as ONNX graphs
with random seeded weights, layer for layer as published (no downloads).

>>> from fcm_tvm.models import build_model, list_models
>>> model = build_model("mobilenet_v2", batch=1, resolution=224)
"""

from .graph import GraphBuilder, Value
from .registry import MODELS, ModelInfo, build_model, count_parameters, list_models, model_info

__all__ = [
    "MODELS",
    "GraphBuilder",
    "ModelInfo",
    "Value",
    "build_model",
    "count_parameters",
    "list_models",
    "model_info",
]
