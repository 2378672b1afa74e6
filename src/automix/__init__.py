"""automix: mixup-family data augmentation for PyTorch, headlined by AutoMix.

Layers (arrows point down only): ``mixers`` (input-space mixers, torch only) and ``losses``;
``models`` (backbones, feature taps); ``methods`` (AutoMix, SAMix, AdAutoMix and any mixer as a training Method);
``collate`` (``MixCollate``: any input-space mixer as a DataLoader ``collate_fn``).
"""

from . import losses
from .collate import MixCollate
from .methods import AdAutoMix, AutoMix, Method, MixerMethod, SAMix, create_method, list_methods, register_method
from .mixers import BaseMixer, MixOutput, MixParams, create_mixer, list_mixers, register_mixer
from .models import FeatureTap, create_model, default_feature_layer, forward_with_features, list_models, register_model

__version__ = "0.1.0"

__all__ = ["BaseMixer", "MixOutput", "MixParams", "create_mixer", "list_mixers", "register_mixer", "losses",
           "FeatureTap", "create_model", "default_feature_layer", "forward_with_features", "list_models",
           "register_model", "AutoMix", "SAMix", "AdAutoMix", "Method", "MixerMethod", "create_method",
           "list_methods", "register_method", "MixCollate", "__version__"]
