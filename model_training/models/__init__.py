"""Backbone wrapper, heads and the classifier composing them."""

from .backbone import Backbone, PretrainedWeightsError, create_timm_body, package_state_dict
from .classifier import MultilabelClassifier, ProbabilityModel, build_model, is_cosine
from .heads import HEADS, HeadContext, build_head

__all__ = [
    "HEADS",
    "Backbone",
    "HeadContext",
    "MultilabelClassifier",
    "PretrainedWeightsError",
    "ProbabilityModel",
    "build_head",
    "build_model",
    "create_timm_body",
    "is_cosine",
    "package_state_dict",
]
