"""Training: one ``fit()`` loop with progress, atomic safetensors checkpoints, exact resume, DDP."""

from netshrink.train.callbacks import Callback, StepInfo
from netshrink.train.checkpoint import load_checkpoint, load_model, save_checkpoint, save_model
from netshrink.train.config import FitConfig
from netshrink.train.fit import FitResult, LossFn, cross_entropy, fit

__all__ = ["Callback", "FitConfig", "StepInfo", "FitResult", "LossFn", "cross_entropy", "fit", "load_checkpoint",
           "load_model", "save_checkpoint", "save_model"]
