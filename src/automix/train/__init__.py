"""The trainer behind ``automix train``: config, data, engine, checkpoints, logs, torchrun.

``fit(cfg)`` runs a whole training; ``Config`` holds every option (YAML + flags).
"""

from .config import Config, from_dict, load_yaml, validate
from .engine import evaluate, fit

__all__ = ["Config", "evaluate", "fit", "from_dict", "load_yaml", "validate"]
