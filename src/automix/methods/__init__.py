"""Training methods: anything that needs the model to mix (AutoMix, SAMix, AdAutoMix) and the generic wrapper
that turns any input-space mixer into a Method, so a trainer treats every method alike.

``create_method(name, model, num_classes=..., **options)`` builds one by name: ``"none"``
(vanilla), any registered mixer name (``"mixup"``, ``"cutmix"``, ...), ``"automix"``, ``"samix"``,
``"adautomix"`` (K-way masks trained adversarially, ``adautomix``) or
``"manifoldmix"`` (mixup of hidden features, ``manifoldmix``), ``"attentivemix"`` (AttentiveMix+ with an
EMA extractor, ``attentivemix``), ``"alignmix"`` (last-stage feature maps aligned by Sinkhorn, then mixed,
``alignmix``), ``"tokenmix"`` (token-block masks on a ViT's grid, optionally a teacher's labels, ``tokenmix``),
``"smmix"`` (max-min attention region mixing with token labels and a consistency loss, ``smmix``), ``"mixpro"``
(MaskMix with progressive attention labels, ``mixpro``) or ``"tla"`` (token CutMix with labels traced through the
attention, ``tla``);
``list_methods()`` lists them and ``register_method`` adds one (``registry``).
"""

from __future__ import annotations

from .adautomix import AdaptiveMask, AdAutoMix
from .alignmix import AlignMix
from .attentivemix import AttentiveMixMethod
from .automix import AutoMix, SAMix
from .base import Method, MixerMethod
from .manifoldmix import ManifoldMix
from .mixblock import PixelMixBlock, mask_loss, rescale_lam
from .mixpro import MixProMethod
from .registry import KINDS, MethodSpec, create_method, list_methods, method_spec, register_method
from .smmix import SMMixMethod
from .tla import TLAMethod
from .tokenmix import TokenMixMethod

__all__ = ["AutoMix", "SAMix", "AdAutoMix", "AdaptiveMask", "ManifoldMix", "AttentiveMixMethod", "AlignMix", "Method",
           "MixerMethod", "MethodSpec", "KINDS", "PixelMixBlock", "create_method", "list_methods", "method_spec",
           "register_method", "mask_loss", "rescale_lam", "TokenMixMethod", "SMMixMethod", "MixProMethod", "TLAMethod"]
