"""Switching between mixers, picked with given probabilities: per batch, per pair or per sample.

``MixChoice`` generalises timm's ``switch_prob``: give it mixers (objects, names, or
``(name, kwargs)`` pairs) and their probabilities. As in timm, the choice has the granularity of
``mode``: one mixer for the whole batch in batch mode, one per symmetric pair in pair mode and one
per sample in elem mode (each sample then gets its own mixer, lambda and box or mask).
``mixup_cutmix`` builds exactly timm's
``Mixup(mixup_alpha, cutmix_alpha, cutmix_minmax, prob, switch_prob, mode, label_smoothing)``
semantics on top of it, which is what the trainer's ``--mixup/--cutmix`` flags create.

In pair / elem mode every candidate mixer draws for the whole batch and samples it did not get are
left unmixed by it. When every candidate is a plain blend (mixup, boxes, masks) their partner weights
are merged per sample into one map and blended once (mixup_cutmix costs about one elem-mode CutMix);
otherwise (resizemix) each candidate mixes the batch and each sample is taken from its own mixer's
output. No Python loop over samples either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .._checks import check_number, check_range
from ._sampling import pair_index, pair_leader
from .base import BaseMixer, MixParams, _blend, partner_weight
from .registry import create_mixer, list_mixers, register_mixer


@register_mixer("mix_choice")
class MixChoice(BaseMixer):
    """Pick one of several mixers for each batch (batch mode), each pair (pair mode) or each sample (elem mode).

    Args:
        mixers: mixer objects, registered names, or ``(name, kwargs)`` pairs. Names inherit this
            switch's ``mode``, ``pairing``, ``num_classes``, ``label_smoothing`` and ``lam`` (a pair's kwargs
            win); in pair and elem mode, mixer objects must have the switch's ``mode``.
        probs: relative probabilities of the mixers (default uniform); normalised to sum to 1.
        prob: chance that the batch (or sample / pair) is mixed at all, applied once, here.
        **kwargs: ``mode``, ``pairing``, ``num_classes``, ``label_smoothing``, ``generator``, and ``lam``: the
            given lambda of every mixer built from a name (``BaseMixer``; mixer objects keep their own).

    ``params.extra["choice"]`` is the index of the chosen mixer: an int in batch mode, a long tensor [B]
    in pair and elem modes (``extra["parts"]`` then holds each mixer's own draw).

    Raises:
        ValueError: empty ``mixers``, bad ``probs``, or (pair / elem mode) a mixer object whose mode differs.

    Example:
        >>> import torch
        >>> from automix import create_mixer
        >>> mixer = create_mixer("mix_choice", mixers=["mixup", ("cutmix", {"alpha": 0.2})],
        ...                      probs=[0.5, 0.5], num_classes=10)
        >>> out = mixer(torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,)))
        >>> out.params.extra["choice"] in (0, 1)
        True
    """

    name = "mix_choice"

    def __init__(self, mixers: Sequence[Any], probs: Sequence[float] | None = None, *, prob: float = 1.0,
                 **kwargs) -> None:
        if "alpha" in kwargs:
            raise TypeError("alpha is set on each mixer of a mix_choice, not on the switch (got alpha=...)")
        super().__init__(1.0, prob=prob, **kwargs)
        if isinstance(mixers, (str, BaseMixer)) or not isinstance(mixers, Sequence) or len(mixers) == 0:
            raise ValueError(f"mixers must be a non-empty list of mixers, names or (name, kwargs) pairs, "
                             f"got {mixers!r}")
        shared = {"mode": self.mode, "pairing": self.pairing, "num_classes": self.num_classes,
                  "label_smoothing": self.label_smoothing, **({"lam": self.lam} if self.lam is not None else {})}
        self.mixers = [self._build(m, shared) for m in mixers]
        if self.mode != "batch":
            for i, m in enumerate(self.mixers):
                if m.mode != self.mode:
                    raise ValueError(f"mixers[{i}] has mode {m.mode!r} but the switch has mode {self.mode!r}; a "
                                     f"per-{'pair' if self.mode == 'pair' else 'sample'} choice needs mixers "
                                     f"drawing per {'pair' if self.mode == 'pair' else 'sample'} too")
        if self.num_classes is None:
            # Mixer objects built elsewhere may carry num_classes; the switch builds the targets.
            known = {m.num_classes for m in self.mixers} - {None}
            self.num_classes = known.pop() if len(known) == 1 else None
        if probs is None:
            probs = [1.0] * len(self.mixers)
        if not isinstance(probs, Sequence) or len(probs) != len(self.mixers):
            raise ValueError(f"probs must have one entry per mixer ({len(self.mixers)}), got {probs!r}")
        weights = [check_number(f"probs[{i}]", p) for i, p in enumerate(probs)]
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"probs must be >= 0 with a positive sum, got {list(probs)!r}")
        self.probs = torch.tensor(weights, dtype=torch.float32) / sum(weights)
        self.spatial = any(m.spatial for m in self.mixers)
        # Shapes every spatial candidate takes (mixup takes any): what the switch accepts.
        dims = [set(m.spatial_dims) for m in self.mixers if m.spatial]
        self.spatial_dims = tuple(sorted(set.intersection(*dims))) if dims else ()
        self.hard = all(m.hard for m in self.mixers)

    @staticmethod
    def _build(spec: Any, shared: dict[str, Any]) -> BaseMixer:
        mixer = MixChoice._make(spec, shared)
        if mixer.needs is not None or mixer.reweights is not None:
            raise ValueError(f"mixers: {mixer.name!r} reads the model's {mixer.needs or mixer.reweights!r} context, "
                             "which a switch does not compute; train model-aware mixers as their own method "
                             "(create_method)")
        return mixer

    @staticmethod
    def _make(spec: Any, shared: dict[str, Any]) -> BaseMixer:
        if isinstance(spec, BaseMixer):
            return spec
        name = spec if isinstance(spec, str) else spec[0] if (
            isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], str)
            and isinstance(spec[1], dict)) else None
        if name is not None and name not in list_mixers():
            raise ValueError(f"mixers: {name!r} is not a mixer; an entry names one of {list_mixers()}")
        if isinstance(spec, str):
            return create_mixer(spec, **shared)
        if name is not None:
            return create_mixer(spec[0], **{**shared, **spec[1]})
        raise TypeError(f"mixers entries must be a mixer, a name or a (name, kwargs) pair, got {spec!r}")

    def __repr__(self) -> str:
        probs = [round(float(p), 4) for p in self.probs]
        return (f"MixChoice(mixers={self.mixers!r}, probs={probs}, prob={self.prob}, mode={self.mode!r}, "
                f"num_classes={self.num_classes})")

    def sample(self, x: Tensor, generator: torch.Generator | None = None, *, context: Any = None) -> MixParams:
        self.check_input(x)
        gen = self._generator(generator)
        if self.mode != "batch":
            return self._draw_per_sample(x, gen, context)
        choice = int(torch.multinomial(self.probs.to(gen.device), 1, generator=gen))
        chosen = self.mixers[choice]
        # The switch's own prob gates mixing; the chosen mixer keeps its own prob too (1 by default).
        params = chosen._draw(x, gen, chosen.prob * self.prob, context)
        params.extra["choice"] = choice
        return params

    def _draw_per_sample(self, x: Tensor, gen: torch.Generator, context: Any = None) -> MixParams:
        """timm's pair / elem switch: a mixer, a lambda and the mix-or-not coin for every sample (or pair)."""
        batch, dev = x.shape[0], gen.device
        index = pair_index(batch, self.pairing, self.mode == "pair", gen)
        choice = torch.multinomial(self.probs.to(dev), batch, replacement=True, generator=gen)
        prob = torch.tensor([m.prob * self.prob for m in self.mixers], device=dev)
        active = torch.rand(batch, generator=gen, device=dev) < prob[choice]
        leader = pair_leader(index) if self.mode == "pair" else None
        if leader is not None:
            choice, active = choice[leader], active[leader]
        parts = []
        for k, mixer in enumerate(self.mixers):
            lam = mixer._draw_lam(batch, gen)
            if leader is not None:
                lam = lam[leader]
            # Samples that did not get mixer k are inactive for it: lam 1, empty box, zero mask.
            mine = active & (choice == k)
            lam = torch.where(mine, lam, torch.ones_like(lam))
            parts.append(mixer._finish(mixer._params(x, index, lam, gen, context), mine, x.device))
        choice = choice.to(x.device)
        lam = torch.stack([p.lam for p in parts]).gather(0, choice.unsqueeze(0)).squeeze(0)
        size = tuple(x.shape[2:]) if self.spatial else None
        return MixParams(index=index.to(x.device), lam=lam, mode=self.mode, size=size,
                         extra={"choice": choice, "parts": parts})

    def check_input(self, x: Any) -> None:
        for mixer in self.mixers:
            mixer.check_input(x)

    def check_image_size(self, size: tuple[int, int]) -> None:
        for mixer in self.mixers:
            mixer.check_image_size(size)

    def _apply(self, t: Tensor, params: MixParams) -> Tensor:
        choice = params.extra["choice"]
        if isinstance(choice, int):
            return self.mixers[choice]._apply(t, params)
        choice = choice.to(t.device).view((-1,) + (1,) * (t.ndim - 1))
        parts = params.extra["parts"]
        if self.spatial and all(type(m)._apply is BaseMixer._apply for m in self.mixers):
            # Plain blends (mixup, boxes, masks): one partner-weight map and one blend, so the cost is one
            # output tensor as for a single mixer, not one per candidate.
            weight = None
            for k, part in enumerate(parts):
                w = partner_weight(part, tuple(t.shape[2:]), t.device)
                weight = w if weight is None else torch.where(choice == k, w, weight)
            return _blend(t, params.index.to(t.device), weight)
        # Each mixer leaves the samples it did not get unchanged; keep every sample from its own mixer.
        out = None
        for k, (mixer, part) in enumerate(zip(self.mixers, parts)):
            mixed = mixer._apply(t, part)
            out = mixed if out is None else torch.where(choice == k, mixed, out)
        if t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def apply_seg(self, seg: Tensor, params: MixParams, x: Tensor) -> Tensor:
        choice = params.extra["choice"]
        if isinstance(choice, int):
            return self.mixers[choice].apply_seg(seg, params, x)
        return super().apply_seg(seg, params, x)

    def preview_parts(self, x: Tensor, params: MixParams) -> dict[str, Any]:
        """The chosen mixer's (batch mode); per sample (pair / elem), each sample's partner region from its own
        mixer and, when one of them is not a plain blend, a legend saying so."""
        choice = params.extra["choice"]
        if isinstance(choice, int):
            return self.mixers[choice].preview_parts(x, params)
        choice = choice.cpu()
        subs = [m.preview_parts(x, part) if bool((choice == k).any()) else {}
                for k, (m, part) in enumerate(zip(self.mixers, params.extra["parts"]))]
        if not any(subs):
            return {}
        size = tuple(x.shape[-2:])
        region = None
        for k, (sub, part) in enumerate(zip(subs, params.extra["parts"])):
            mine = sub.get("partner_region")
            mine = (partner_weight(part, size, torch.device("cpu")) > 0).expand(x.shape[0], 1, *size) \
                if mine is None else mine.cpu()
            region = mine if region is None else torch.where((choice == k).view(-1, 1, 1, 1), mine, region)
        return {"partner_region": region,
                "legend": ("original: label weight lam",
                           "partner: label weight 1 - lam",
                           "mask: partner's share (white = partner)",
                           "mixed: each sample as the mixer chosen for",
                           "  it mixes it (red: the partner's part shown)",
                           "right: lam | mean of the mask")}


@register_mixer("mixup_cutmix")
def mixup_cutmix(mixup_alpha: float = 1.0, cutmix_alpha: float = 0.0, cutmix_minmax: tuple[float, float] | None = None,
                 prob: float = 1.0, switch_prob: float = 0.5, correct_lam: bool = True, **kwargs) -> BaseMixer:
    """timm's ``Mixup`` options as one mixer: mixup, cutmix, or a switch between them.

    CutMix is active when ``cutmix_alpha > 0`` or ``cutmix_minmax`` is set, mixup when
    ``mixup_alpha > 0``; with both, CutMix is chosen with probability ``switch_prob``, as timm does:
    once per batch in batch mode, per pair in pair mode and per sample in elem mode. Unlike timm,
    ``label_smoothing`` defaults to 0 (keep smoothing a visible choice) and odd batches work.
    ``lam=`` (``BaseMixer``) gives both mixers that lambda instead of their Beta draws; the alphas then only
    say which of the two are on (``cutmix_minmax`` with ``lam`` is refused: both would size the box).

    Example:
        >>> import torch
        >>> from automix import create_mixer
        >>> mixer = create_mixer("mixup_cutmix", mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.5, mode="elem")
        >>> out = mixer(torch.rand(64, 3, 16, 16), torch.rand(64, 4), torch.Generator().manual_seed(0))
        >>> sorted(set(out.params.extra["choice"].tolist()))  # per sample: 0 = mixup, 1 = cutmix
        [0, 1]
    """
    mixup_alpha = check_range("mixup_alpha", mixup_alpha, 0.0, float("inf"))
    cutmix_alpha = check_range("cutmix_alpha", cutmix_alpha, 0.0, float("inf"))
    switch_prob = check_range("switch_prob", switch_prob, 0.0, 1.0)
    use_cutmix = cutmix_alpha > 0 or cutmix_minmax is not None
    # With a given lam the alphas only say which mixers are on: the mixers get lam alone (alpha beside it is
    # refused by every mixer, as it would be unused).
    given_lam = kwargs.get("lam") is not None
    mix_kw = {} if given_lam else {"alpha": mixup_alpha}
    cut_kw = {"cutmix_minmax": cutmix_minmax, "correct_lam": correct_lam,
              **({} if given_lam else {"alpha": cutmix_alpha if cutmix_alpha > 0 else 1.0})}
    if mixup_alpha > 0 and use_cutmix:
        return MixChoice([("mixup", mix_kw), ("cutmix", cut_kw)], [1 - switch_prob, switch_prob],
                         prob=prob, **kwargs)
    if mixup_alpha > 0:
        return create_mixer("mixup", prob=prob, **mix_kw, **kwargs)
    if use_cutmix:
        return create_mixer("cutmix", prob=prob, **cut_kw, **kwargs)
    raise ValueError(f"mixup_cutmix needs mixup_alpha > 0 or cutmix_alpha > 0 or cutmix_minmax, "
                     f"got mixup_alpha={mixup_alpha}, cutmix_alpha={cutmix_alpha}, cutmix_minmax={cutmix_minmax}")
