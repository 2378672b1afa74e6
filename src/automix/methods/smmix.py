"""SMMix as a Method (Chen et al., "SMMix: Self-Motivated Image Mixing for Vision Transformers", ICCV 2023,
arXiv:2212.12977): the model under training picks the regions to mix, supervises them token by token, and keeps
the mixed image's prediction consistent with the clean images'.

Each step is, per batch, SMMix (chance ``switch_prob``) or plain mixup (``mixup_alpha``), as the references. An
SMMix step:

1. **Clean pass** (no gradient, eval mode, as the authors' ``motivat_model.eval()``): the model on the clean batch
   gives its logits ``z`` and its last block's attention.
2. **Max-min attention region mixing** (``automix.mixers.smmix.SMMix``): the partner's most attended ``s x s`` token
   square is pasted over the sample's least attended one; ``lam = 1 - s^2 / (h * w)``.
3. **Mixed pass**: logits ``o`` of the mixed batch and its final tokens (the output of ``token_layer``, the model's
   final norm). Three losses:

   * ``loss_cls``: the method's loss of ``o`` against ``lam * y + (1 - lam) * y[index]``;
   * ``loss_fine`` (fine-grained label assignment): a token head (``token_head``, a linear layer of the method's,
     or the model's own head with ``share_head``) on the mean of the patch tokens the sample kept, against the
     sample's label, and on the mean of the pasted tokens, against the partner's label, averaged;
   * ``loss_con`` (feature consistency): ``KL(softmax(lam * z + (1 - lam) * z[index]) || softmax(o))``, batch
     mean: the mixed image's prediction is pulled to the mix of the clean images' logits.

   ``loss = loss_cls + fine_loss_weight * loss_fine + consistency_loss_weight * loss_con`` (1 and 1, the authors').

A mixup step trains on ``loss_cls`` alone (``loss_fine`` and ``loss_con`` logged as 0). Reference code read:
ChenMnZ/SMMix ``smmix.py``, ``engine.py`` (``train_one_epoch``: the three losses, ``KLDivLoss(reduction=
'batchmean')``), ``deit.py`` (``token_head``) and ``main.py`` (defaults) at commit 353a944; OpenMixup
``openmixup/models/classifiers/mixup_classification.py`` (``forward_vit_based_mix``, whose default
``offical_set = False`` trains on ``loss_cls`` only: ``fine_loss_weight=0, consistency_loss_weight=0`` here) and
``openmixup/models/augments/smmix.py`` (Westlake-AI/openmixup at commit 37e1372). Defaults: OpenMixup's CIFAR-100
DeiT-S config (``deit_s_smmix_sz224_bs100_ep200.py``: SMMix 0.8 / mixup 0.2, alpha 1, ``side=14`` at 224 / 16,
``min_side_ratio=0.25, max_side_ratio=0.75``) with the authors' losses; the authors' ImageNet script uses
``switch_prob=0.5, mixup_alpha=0.8``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_range, check_type
from ..context import eval_mode
from ..losses import TargetLoss, soft_targets, target_loss
from ..mixers import Mixup
from ..mixers.base import MixParams
from ..mixers.smmix import SMMix
from ..models.attention import AttentionTap, find_attention
from ..models.features import FeatureTap, resolve_module, token_grid
from .base import MixerMethod
from .heads import find_classifier
from .registry import register_method
from .tokenmix import token_patch_size


@register_method("smmix", kind="model-aware")
class SMMixMethod(MixerMethod):
    """SMMix (arXiv:2212.12977): max-min attention region mixing, fine-grained token labels and feature consistency,
    switched with mixup per batch.

    Args:
        model: the ViT being trained (its attention at ``layer``, its patch size, its final tokens at
            ``token_layer`` and its linear classifier are read).
        switch_prob: chance of an SMMix step (else mixup), per batch.
        mixup_alpha: Beta(alpha, alpha) of the mixup steps.
        min_side_ratio, max_side_ratio: the square's side range as fractions of the token grid's side.
        score: how a token's attention is rated: ``"patches"`` (the authors') or ``"cls"`` (OpenMixup's).
        layer: the attention module (or a block holding one) that rates the tokens; None: the model's last.
        patch_size: the token side in pixels; None: the model's. Given, it must be the model's (the attention's
            token grid; ``token_patch_size``).
        token_layer: the module whose output holds the final tokens [B, N, C] (``"norm"``: the final norm of
            automix's and timm's ViTs).
        share_head: train the model's own classifier on the region tokens instead of a token head of the method's.
        fine_loss_weight, consistency_loss_weight: weights (>= 0) of ``loss_fine`` and ``loss_con``.
        prob: chance that a batch (or sample, ``mode="elem"``) is mixed at all.
        mode: ``"batch"`` (one square side per batch, the references') or ``"elem"`` (one per sample); the
            SMMix / mixup switch is per batch either way.
        pairing, num_classes, label_smoothing, loss, total_steps, seed: as ``MixerMethod``.

    Raises:
        ValueError: a model without attention (naming ``model``, or ``layer`` when given), without a patch size
            (naming ``model``), a ``patch_size`` that is not the model's (naming both), without ``token_layer``,
            whose classifier is not an ``nn.Linear`` (naming ``model``), or a bad option (named); at a step, tokens
            at ``token_layer`` that are not [B, N, C] on the image's grid (naming ``token_layer``).

    ``training_step`` returns the loss and ``{"loss", "loss_cls", "loss_fine", "loss_con"}``; ``last_params["mix"]``
    is the step's draw (``extra["choice"]``: ``"smmix"`` or ``"mixup"``).

    Example (x: [B, C, H, W], y: [B] class ids):
        >>> import torch, automix
        >>> vit = automix.create_model("vit_tiny", num_classes=4, depth=2)
        >>> method = automix.create_method("smmix", vit, num_classes=4, switch_prob=1.0, seed=0)
        >>> loss, logs = method.training_step(torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
        >>> sorted(logs), method.last_params["mix"].extra["choice"]
        (['loss', 'loss_cls', 'loss_con', 'loss_fine'], 'smmix')
    """

    def __init__(self, model: nn.Module, *, switch_prob: float = 0.8, mixup_alpha: float = 1.0,
                 min_side_ratio: float = 0.25, max_side_ratio: float = 0.75, score: str = "patches",
                 layer: str | None = None, patch_size: int | None = None, token_layer: str = "norm",
                 share_head: bool = False, fine_loss_weight: float = 1.0, consistency_loss_weight: float = 1.0,
                 prob: float = 1.0, mode: str = "batch", pairing: str = "perm", num_classes: int | None = None,
                 label_smoothing: float = 0.0, loss: str | TargetLoss = "ce", total_steps: int | None = None,
                 seed: int | None = None) -> None:
        check_type("model", model, nn.Module, "an nn.Module")
        if layer is not None:
            check_type("layer", layer, str, "a module path string or None")
        attn_layer, _ = find_attention(model, layer, option="layer")  # a model without attention: named here
        patch_size = token_patch_size(model, patch_size, "smmix")
        resolve_module(model, token_layer, "token_layer")
        check_type("share_head", share_head, bool, "a bool")
        mixer = SMMix(patch_size=patch_size, min_side_ratio=min_side_ratio, max_side_ratio=max_side_ratio,
                      score=score, prob=prob, mode=mode, pairing=pairing, num_classes=num_classes,
                      label_smoothing=label_smoothing)
        super().__init__(model, mixer, num_classes=num_classes, loss=loss, total_steps=total_steps, seed=seed)
        self.switch_prob = check_range("switch_prob", switch_prob, 0.0, 1.0)
        self.mixup_alpha = check_range("mixup_alpha", mixup_alpha, 0.0, float("inf"), low_open=True)
        self.fine_loss_weight = check_range("fine_loss_weight", fine_loss_weight, 0.0, float("inf"))
        self.consistency_loss_weight = check_range("consistency_loss_weight", consistency_loss_weight, 0.0,
                                                   float("inf"))
        self.mixup = Mixup(self.mixup_alpha, prob=prob, mode=mode, pairing=pairing, num_classes=num_classes,
                           label_smoothing=label_smoothing)
        self.layer, self.token_layer, self.share_head = attn_layer, token_layer, share_head
        self.head_layer = find_classifier(model)
        head = model.get_submodule(self.head_layer)
        if not isinstance(head, nn.Linear):
            raise ValueError(f"model: SMMix's token head is a linear classifier beside the model's, which must be an "
                             f"nn.Linear; got {type(head).__name__} at {self.head_layer!r}")
        self.token_head: nn.Linear | None = None
        if not share_head:
            # As the authors' DeiT: a second linear classifier beside the class-token head, DeiT's initialisation.
            self.token_head = nn.Linear(head.in_features, head.out_features)
            nn.init.trunc_normal_(self.token_head.weight, std=0.02)
            nn.init.zeros_(self.token_head.bias)
            self.token_head.to(head.weight.device, head.weight.dtype)

    @property
    def skips_parameters(self) -> bool:
        """The token head takes no part in a mixup step's loss (DDP must expect that)."""
        return self.token_head is not None and self.switch_prob < 1

    def param_groups(self) -> list[dict[str, Any]]:
        """One group: the model and the token head (trained together, as the authors' single optimiser)."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.token_head is not None:
            params += list(self.token_head.parameters())
        return [{"name": "model", "params": params}]

    def head_modules(self) -> list[nn.Module]:
        """The model's classifier and the token head beside it."""
        heads = [self.model.get_submodule(self.head_layer)]
        return heads + ([self.token_head] if self.token_head is not None else [])

    @torch.no_grad()
    def clean_pass(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The model on the clean batch in eval mode without gradient: float32 logits [B, K] and the attention
        probabilities [B, heads, N, N] at ``layer`` (from the same pass)."""
        with eval_mode(self.model), AttentionTap(self.model, self.layer) as tap:
            logits = self.model(x)
            attn = tap.pop()
        return logits.float(), attn

    def context(self, x: Tensor, y: Tensor) -> Any:
        """The attention that rates the tokens: the clean pass's (``clean_pass``)."""
        return self.clean_pass(x)[1]

    def training_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        mixer = self.mixer
        if not self.mixing:
            return self.clean_step(x, y, who="smmix", num_classes=self.num_classes or mixer.num_classes,
                                   label_smoothing=mixer.label_smoothing, loss=self.loss)
        self.check_batch(x, y, "smmix", num_classes=self.num_classes or mixer.num_classes,
                         spatial_dims=mixer.spatial_dims)
        mixer.check_input(x)  # the patch grid too, before any pass: an image the patches do not tile is named
        x = self.cast_input(x)
        mixer.check_targets(y, x.shape[0])
        gen = self.generator
        if not bool(torch.rand(1, generator=gen, device=gen.device) < self.switch_prob):
            params = self.mixup.sample(x, gen)
            params.extra["choice"] = "mixup"
            self.last_params = {"mix": params}
            loss = target_loss(self.loss, self.model(self.mixup.apply(x, params)), self.mixup.mix_targets(y, params))
            zero = torch.zeros((), device=loss.device)
            return loss, {"loss": loss.detach(), "loss_cls": loss.detach(), "loss_fine": zero, "loss_con": zero}
        clean, attn = self.clean_pass(x)
        params = mixer.sample(x, gen, context=attn)
        params.extra["choice"] = "smmix"
        self.last_params = {"mix": params}
        with FeatureTap(self.model, self.token_layer) as tap:
            logits = self.model(mixer.apply(x, params))
            tokens = tap.pop()
        loss_cls = target_loss(self.loss, logits, mixer.mix_targets(y, params))
        loss_fine = self._fine_loss(tokens, y, params)
        loss_con = self._consistency_loss(logits, clean, params)
        loss = loss_cls + self.fine_loss_weight * loss_fine + self.consistency_loss_weight * loss_con
        return loss, {"loss": loss.detach(), "loss_cls": loss_cls.detach(), "loss_fine": loss_fine.detach(),
                      "loss_con": loss_con.detach()}

    def _fine_loss(self, tokens: Tensor, y: Tensor, params: MixParams) -> Tensor:
        """Fine-grained label assignment: the token head on the mean kept tokens (sample's label) and on the mean
        pasted tokens (partner's label), each averaged over the samples that have such tokens, then halved."""
        size = tuple(params.size)
        if not isinstance(tokens, Tensor) or tokens.ndim != 3:
            raise ValueError(f"token_layer {self.token_layer!r} gives shape {tuple(getattr(tokens, 'shape', ()))}; "
                             f"SMMix needs the final tokens [B, N, C]")
        prefix, h, w = token_grid(tokens.shape[1], size, getattr(self.model, "num_prefix_tokens", None),
                                  name="token_layer")
        p = self.mixer.patch_size
        if (h, w) != (size[0] // p, size[1] // p):
            raise ValueError(f"token_layer {self.token_layer!r} lays its tokens on a {h}x{w} grid, but "
                             f"patch_size={p} cuts the images into {size[0] // p}x{size[1] // p}")
        patches = tokens[:, prefix:]
        if params.mask is None:  # a batch prob left unmixed: every token is the sample's own
            pasted = patches.new_zeros(patches.shape[:2])
        else:
            pasted = params.mask[:, 0, ::p, ::p].flatten(1).to(patches.device, patches.dtype)  # [B, h * w]
        kept = 1.0 - pasted
        head = self.token_head if self.token_head is not None else self.model.get_submodule(self.head_layer)
        targets = soft_targets(y, self.num_classes or self.mixer.num_classes, self.mixer.label_smoothing)
        terms = []
        for region, target in ((kept, targets), (pasted, targets[params.index.to(targets.device)])):
            count = region.sum(1, keepdim=True)
            feats = (patches * region.unsqueeze(-1)).sum(1) / count.clamp_min(1.0)
            per_sample = target_loss(self.loss, head(feats), target.to(feats.device), reduction="none")
            has = (count[:, 0] > 0).to(per_sample.dtype)
            terms.append((per_sample.float() * has).sum() / has.sum().clamp_min(1.0))
        return 0.5 * (terms[0] + terms[1])

    @staticmethod
    def _consistency_loss(logits: Tensor, clean: Tensor, params: MixParams) -> Tensor:
        """Feature consistency: ``KL(softmax(lam z + (1 - lam) z[index]) || softmax(logits))``, batch mean (the
        authors' ``KLDivLoss(reduction='batchmean')`` of ``log_softmax(logits)`` against the mixed clean logits)."""
        lam = params.lam.to(clean.device, torch.float32).view(-1, 1)
        mixed = lam * clean + (1.0 - lam) * clean[params.index.to(clean.device)]
        target = mixed.log_softmax(1)
        return F.kl_div(logits.float().log_softmax(1), target, reduction="batchmean", log_target=True)
