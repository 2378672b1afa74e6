"""Input-space mixers: pure tensor operations on a batch, no model needed, or given what they read from the model
(``BaseMixer.needs``: SnapMix reads class activation maps, AttentiveMix feature maps; ``BaseMixer.reweights``:
TransMix re-weights its labels by a ViT's attention on the mixed batch; ``automix.context``
computes them; ``AttentiveMix`` is not registered as a mixer: its method ``"attentivemix"`` owns its extractor;
neither are the ViT mixers whose grid is the model's patches, ``tokenmix.TokenMix``, ``smmix.SMMix``,
``mixpro.MixPro`` and ``tla.TLA``: their methods of the same names read the patch size from the model).

Every mixer follows the contract of ``base.BaseMixer`` and is registered by name; build one with
``create_mixer(name, **kwargs)`` and list them with ``list_mixers()``.
"""

from .attentivemix import AttentiveMix
from .base import BaseMixer, MixOutput, MixParams
from .choice import MixChoice, mixup_cutmix
from .cutmix import CutMix
from .fmix import FMix
from .gridmix import GridMix
from .guidedmix import GuidedMix
from .mixup import Mixup
from .puzzlemix import PuzzleMix
from .registry import create_mixer, list_mixers, register_mixer
from .resizemix import ResizeMix
from .saliencymix import SaliencyMix, saliency_map
from .smoothmix import SmoothMix
from .snapmix import SnapMix
from .transmix import TransMix

__all__ = ["BaseMixer", "MixOutput", "MixParams", "create_mixer", "list_mixers", "register_mixer", "Mixup", "CutMix",
           "FMix", "GridMix", "SmoothMix", "ResizeMix", "SaliencyMix", "saliency_map", "PuzzleMix", "GuidedMix",
           "MixChoice", "mixup_cutmix", "SnapMix", "AttentiveMix", "TransMix"]
