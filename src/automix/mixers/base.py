"""The Mixer contract: ``MixParams``, ``MixOutput`` and ``BaseMixer``, which every mixer extends.

A mixer turns a batch ``(x, y)`` into a mixed batch in two steps, kept apart on purpose:

* ``sample(x, generator)`` draws the random parameters (partner index, lambda, box or mask);
* ``apply(t, params)`` mixes any tensor with a draw, so the same mix can be applied again, to a
  segmentation mask, a second view, or the same batch after a restart.

``mixer(x, y)`` does both, mixes the targets and returns a ``MixOutput``. Conventions:

* ``lam[i]`` is the weight of sample ``i`` itself; ``1 - lam[i]`` the weight of its partner
  ``x[index[i]]``. Targets are ``lam * y + (1 - lam) * y[index]``. ``lam`` and the targets are
  float32 whatever the image dtype (bf16 would round class ids and small weights).
* ``mode`` sets the granularity: ``batch`` (one draw for the batch), ``pair`` (one draw shared by
  the two members of a symmetric pair) or ``elem`` (one draw per sample). All are vectorised.
* ``prob`` is the chance that the batch (batch mode) or a sample / pair (other modes) is mixed
  at all; it is applied exactly once.
* The caller's tensors are never written to.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.utils.data import get_worker_info

from .._checks import (
    check_batch,
    check_choice,
    check_generator,
    check_positive,
    check_positive_int,
    check_range,
    check_targets,
    check_tensor,
    check_type,
)
from ._lam import LamSpec, lam_sampler, refusing_alpha_with_lam
from ._sampling import PAIRINGS, box_mask, pair_index, pair_leader, sample_beta

MODES = ("batch", "pair", "elem")


@dataclass(kw_only=True)
class MixParams:
    """One draw of a mixer, enough to apply exactly the same mix again (fields are keyword-only).

    Every draw is a ``MixParams``: the input mixers', and the learned methods' (AutoMix's and SAMix's Mix
    Block masks), so the same code blends (``blend``), mixes targets (``mix_targets``) and segmentation maps,
    replays and previews all of them.

    Attributes:
        index: long [B] partner of each sample.
        lam: float32 [B] weight of each sample itself (after any correction to the realised area), the weight of
            its own label in the targets.
        lam_partner: float32 [B] weight of the partner's label when it is not ``1 - lam``, else None. SnapMix
            (arXiv:2012.04846) weighs each image's label by the share of its class activation map the mix keeps,
            so the two weights need not sum to 1; ``mix_targets`` gives ``lam * y + lam_partner * y[index]``.
        mode: the granularity the draw was made for.
        mixed: False when ``prob`` decided not to mix this batch at all (batch mode).
        size: the spatial size the draw was made for ((H, W) for images, (T,) for signals, (D, H, W) for
            volumes), or None for non-spatial mixers.
        box: long [N, 2d] boxes on the CPU, (lo, hi) per spatial dim: (y1, y2, x1, x2) for images;
            N = 1 in batch mode, else B.
        mask: weight of the partner, [N, 1, *size] float32 or bool, N = 1 in batch mode, else B.
        extra: mixer-specific values (e.g. the chosen sub-mixer of a switch).
    """

    index: Tensor
    lam: Tensor
    mode: str
    lam_partner: Tensor | None = None
    mixed: bool = True
    size: tuple[int, ...] | None = None
    box: Tensor | None = None
    mask: Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Region:
    """What a mixer's ``_sample`` draws beyond the partner index and lambda (see ``BaseMixer._sample``).

    Attributes:
        box: long [n, 2d] boxes (lo, hi per spatial dim), or None.
        mask: partner weight [n, 1, *size] (bool or float), or None.
        lam: float32 [n] lambda corrected to what the box or mask realises, or None to keep the drawn one.
        lam_partner: float32 [B] weight of the partner's label when it is not ``1 - lam`` (``MixParams``).
        extra: mixer-specific values for ``_apply`` (``MixParams.extra``), e.g. PuzzleMix's transport plans.
    ``n`` is 1 in batch mode and the batch size otherwise (a mixer may return B rows in batch mode: one lam drawn
    for the batch, a mask per sample, as PuzzleMix does; or per-sample label weights, as SnapMix).
    """

    box: Tensor | None = None
    mask: Tensor | None = None
    lam: Tensor | None = None
    lam_partner: Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# What a reweighting mixer's ``reweights`` context is, in words, for the error of a bare ``mixer(x, y)``.
_REWEIGHT_CONTEXTS = {"attention": "the class-token attention",
                      "attention_maps": "the attention maps of every block"}


@dataclass
class MixOutput:
    """Result of ``mixer(x, y)``.

    Attributes:
        x: the mixed batch, same shape, dtype and memory format as the input.
        y: the mixed targets (float32 for class targets; regression targets keep their shape).
        lam: float32 [B], weight of each sample itself.
        index: long [B], partner of each sample, for loss interpolation.
        params: the draw, to replay with ``mixer(x, y, params=out.params)`` or ``mixer.apply``.
        seg: the mixed segmentation mask when ``seg=`` was given, else None.
    """

    x: Tensor
    y: Tensor
    lam: Tensor
    index: Tensor
    params: MixParams
    seg: Tensor | None = None


class BaseMixer:
    """Shared machinery of every input-space mixer: checks, lambda and pairing draws, targets.

    Subclasses set ``name`` and override ``_sample`` (return the box or mask and any lam correction as a
    ``Region``; the base class slices lambda to the draw count, expands it to the batch and builds the
    ``MixParams``) and, when the mix is not a plain partner-weighted blend, ``_apply``.

    Model-aware mixers (PuzzleMix, SnapMix, ...) stay pure tensor functions of what they are given: they
    set ``needs`` to the name of a context (``"saliency"``, ``"cam"``, ``"features"``, ``"attention"``;
    ``automix.context``) and read it from ``_sample``'s ``context`` argument; ``context_options()`` gives the
    context function its keyword arguments (e.g. a layer). A mixer whose label weight is known only after the
    forward pass of the mixed batch (TransMix) sets ``reweights`` to the context read during that pass and
    overrides ``reweight(params, context)``. ``MixerMethod`` wires both; called directly such a mixer needs
    ``context=``.

    Args:
        alpha: Beta(alpha, alpha) concentration of lambda. Must be finite and > 0. Not used when ``lam`` is given,
            so giving both is a ``ValueError`` (naming both values), whichever way the mixer is built.
        lam: a given lambda instead of Beta(alpha, alpha) (``automix.mixers._lam``): a number in [0, 1] (that
            lambda for every mix), a ``(low, high)`` pair (uniform), a scalar ``torch.distributions.Distribution``,
            a callable ``(shape, generator) -> Tensor`` or a spec mapping (``{"beta": [a, b]}``,
            ``{"uniform": [lo, hi]}``, ``{"eps": [lo, hi]}``, ``{"fold": ...}``). Drawn through the mixer's
            generator, so draws repeat and replay. ``None`` (default): Beta(alpha, alpha), drawn exactly as
            before. Box and mask mixers still report the realised lambda (unless their ``correct_lam`` is off).
            Raises ``ValueError`` naming ``lam`` for a value outside [0, 1] (for distributions and callables:
            when a drawn value is), ``TypeError`` for another type.
        prob: chance that a batch (batch mode) or a sample / pair (other modes) is mixed at all.
        mode: ``"batch"``, ``"pair"`` or ``"elem"``.
        pairing: ``"perm"`` (random permutation, as the reference) or ``"flip"`` (i with B-1-i).
        num_classes: needed when targets are given as class indices.
        label_smoothing: smoothing applied to class targets (indices or [B, C]) before mixing.
        generator: default generator for the draws; ``None`` uses torch's global generator. Inside a
            DataLoader worker (a mixer in ``collate_fn``), each worker re-seeds its copy once from this
            generator's seed, the worker id and the worker's per-epoch seed, so workers and epochs draw
            differently and a seeded run repeats exactly; the main process uses it as given.
    """

    name: ClassVar[str] = "base"
    spatial: ClassVar[bool] = True  # needs [B, C, *spatial] input
    spatial_dims: ClassVar[tuple[int, ...]] = (2,)  # how many spatial dims it is defined for (2: images)
    hard: ClassVar[bool] = True  # masks are 0/1, so integer segmentation maps can be mixed
    needs: ClassVar[str | None] = None  # the context the draw reads (automix.context), None: no model needed
    reweights: ClassVar[str | None] = None  # the context read in the mixed batch's forward pass to reset lam

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in vars(cls):  # alpha beside a given lam is refused by every constructor's call (``_lam``)
            cls.__init__ = refusing_alpha_with_lam(cls.__init__)

    @refusing_alpha_with_lam
    def __init__(self, alpha: float = 1.0, *, lam: LamSpec | None = None, prob: float = 1.0, mode: str = "batch",
                 pairing: str = "perm", num_classes: int | None = None, label_smoothing: float = 0.0,
                 generator: torch.Generator | None = None) -> None:
        self.alpha = check_positive("alpha", alpha)
        self.lam_sampler = lam_sampler(lam)
        self.lam = lam
        self.prob = check_range("prob", prob, 0.0, 1.0)
        self.mode = check_choice("mode", mode, MODES)
        self.pairing = check_choice("pairing", pairing, PAIRINGS)
        self.num_classes = None if num_classes is None else check_positive_int("num_classes", num_classes)
        self.label_smoothing = check_range("label_smoothing", label_smoothing, 0.0, 1.0, high_open=True)
        self.generator = check_generator("generator", generator)
        self._worker_key: tuple[int, int, int] | None = None  # the DataLoader worker the generator was seeded for

    # ------------------------------------------------------------------ pickling (DataLoader workers)
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if isinstance(state.get("generator"), torch.Generator):
            # torch.Generator pickles its state as a tensor, which multiprocessing's pickler passes through shared
            # memory; a worker started with "spawn" or "forkserver" then dies mapping it ("unable to resize file").
            # The state as bytes travels with any pickler, and the rebuilt generator draws what this one would.
            state["generator"] = GeneratorState.of(state["generator"])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("generator"), GeneratorState):
            state = {**state, "generator": state["generator"].rebuild()}
        self.__dict__.update(state)

    def __copy__(self) -> BaseMixer:
        # A shallow copy shares the generator (as it did before __getstate__): MixCollate's copy of a mixer with its
        # num_classes set draws from the caller's stream in the main process.
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __repr__(self) -> str:
        keys = (("alpha",) if self.lam is None else ("lam",)) + (  # a given lam replaces alpha
            "prob", "mode", "pairing", "num_classes", "label_smoothing") + self._repr_keys()
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in keys)
        return f"{type(self).__name__}({args})"

    def _repr_keys(self) -> tuple[str, ...]:
        return ()

    # ------------------------------------------------------------------ public API
    def __call__(self, x: Tensor, y: Tensor, generator: torch.Generator | None = None, *,
                 params: MixParams | None = None, seg: Tensor | None = None, context: Any = None) -> MixOutput:
        """Mix ``x`` and ``y``; replay ``params`` instead of drawing when given (``context``: see ``sample``).

        Raises:
            TypeError: a mixer whose label weight is set after the model's forward pass of the mixed batch
                (``reweights``: TransMix, MixPro, TL-Align) called without ``params``: its targets need what that
                pass shows, which this call cannot see (it would give area labels). Train it with
                ``automix.create_method(name, model)`` and ``training_step``, or draw, apply, ``reweight`` and
                ``mix_targets`` in turn; ``params=`` replays a draw ``reweight`` already set.
        """
        if params is None and self.reweights is not None:
            raise TypeError(self._reweight_message())
        self.check_input(x)
        self.check_targets(y, x.shape[0])
        if params is None:
            params = self.sample(x, generator, context=context)
        elif not isinstance(params, MixParams):
            raise TypeError(f"params must be a MixParams, got {type(params).__name__}")
        x_mix = self.apply(x, params)
        y_mix = self.mix_targets(y, params)
        seg_mix = None if seg is None else self.apply_seg(seg, params, x)
        return MixOutput(x_mix, y_mix, params.lam, params.index, params, seg_mix)

    def _reweight_message(self) -> str:
        what = _REWEIGHT_CONTEXTS.get(self.reweights, f"the model's {self.reweights!r} context")
        return (f"{self.name} sets its label weight from {what} of the model's forward pass on the mixed batch, "
                f"which mixer(x, y) does not see (its targets would be plain area labels); train it as a method: "
                f"method = automix.create_method({self.name!r}, model, num_classes=...), then "
                f"loss, logs = method.training_step(x, y) and method.after_step() each step; or in steps: "
                f"params = mixer.sample(x); x_mix = mixer.apply(x, params); the model's pass on x_mix inside "
                f"automix.context.capture_context({self.reweights!r}, model, **mixer.context_options()) as seen; "
                f"params = mixer.reweight(params, seen.value); y_mix = mixer.mix_targets(y, params)")

    def sample(self, x: Tensor, generator: torch.Generator | None = None, *, context: Any = None) -> MixParams:
        """Draw the parameters for a batch like ``x`` (its content is read only by saliency mixers).

        ``context`` is what a model-aware mixer reads (``needs``): a tensor or dict of tensors from
        ``automix.context``. Raises ``ValueError`` when such a mixer gets none.
        """
        self.check_input(x)
        if self.needs is not None and context is None:
            raise ValueError(f"context must be given for {self.name}: it reads the model's {self.needs!r} "
                             f"(automix.context); train it through automix.create_method({self.name!r}, model)")
        return self._draw(x, self._generator(generator), self.prob, context)

    def context_options(self) -> dict[str, Any]:
        """Keyword arguments of the context function for ``needs`` / ``reweights`` (e.g. ``{"layer": ...}``)."""
        return {}

    def wants_reweight(self, params: MixParams) -> bool:
        """Whether ``reweight`` would read the context for this draw; when not, the method runs the mixed batch's
        forward pass without reading it (TransMix: a Mixup draw needs no attention, so none is computed)."""
        return self.reweights is not None

    def reweight(self, params: MixParams, context: Any) -> MixParams:
        """The draw with lam set from ``context`` read during the mixed batch's forward pass (``reweights``).

        The default keeps ``params``: only mixers whose label weight depends on the model's view of the mixed
        batch (TransMix, TokenMix) override it. Must return lam as float32 [B].
        """
        return params

    def _draw(self, x: Tensor, gen: torch.Generator, prob: float, context: Any = None) -> MixParams:
        batch = x.shape[0]
        size = tuple(x.shape[2:]) if self.spatial else None
        index = pair_index(batch, self.pairing, self.mode == "pair", gen)
        if self.mode == "batch":
            mixed = prob >= 1.0 or bool(torch.rand(1, generator=gen, device=gen.device) < prob)
            if not mixed:
                lam = torch.ones(batch, dtype=torch.float32, device=x.device)
                return MixParams(index=index.to(x.device), lam=lam, mode=self.mode, mixed=False, size=size)
            lam = self._draw_lam(1, gen).expand(batch)
            active = None
        else:
            lam = self._draw_lam(batch, gen)
            active = torch.rand(batch, generator=gen, device=gen.device) < prob
            if self.mode == "pair":
                leader = pair_leader(index)
                lam, active = lam[leader], active[leader]
            lam = torch.where(active, lam, torch.ones_like(lam))
        return self._finish(self._params(x, index, lam, gen, context), active, x.device)

    def _params(self, x: Tensor, index: Tensor, lam: Tensor, gen: torch.Generator, context: Any = None) -> MixParams:
        """The draw before ``_finish``: ``_sample`` on lam sliced to the draw count, lam expanded to the batch."""
        count = 1 if self.mode == "batch" else x.shape[0]
        region = self._sample(x, lam[:count], gen, index=index, context=context)
        if region.lam is not None:
            lam = region.lam.to(lam.device).expand(x.shape[0]).clone()
        return MixParams(index=index, lam=lam, mode=self.mode, size=tuple(x.shape[2:]) if self.spatial else None,
                         box=region.box, mask=region.mask, lam_partner=region.lam_partner,
                         extra=dict(region.extra))

    def apply(self, t: Tensor, params: MixParams) -> Tensor:
        """Mix tensor ``t`` (same batch size and spatial size as the draw) with ``params``."""
        check_tensor("t", t)
        if t.shape[0] != params.index.shape[0]:
            raise ValueError(f"t has batch size {t.shape[0]} but params were drawn for {params.index.shape[0]}")
        if self.spatial and params.size is not None:
            check_spatial_size("t", t.shape[max(t.ndim - len(params.size), 0):], params)
        if not params.mixed:
            return t
        return self._apply(t, params)

    def apply_seg(self, seg: Tensor, params: MixParams, x: Tensor) -> Tensor:
        """Mix a segmentation target like ``x`` [B, C, *spatial]: an integer map [B, *spatial] (hard mixers)
        or a float map [B, K, *spatial] (``mix_seg``)."""
        return mix_seg(seg, params, x, self.apply, hard=self.hard, who=self.name)

    def mix_targets(self, y: Tensor, params: MixParams) -> Tensor:
        """Soft targets ``lam * y + (1 - lam) * y[index]`` in float32 (or y's wider float dtype)."""
        return mix_targets(y, params, self.num_classes, self.label_smoothing)

    def to_target(self, y: Tensor) -> Tensor:
        """Class indices -> (smoothed) one-hot float32; float targets -> float32 copy, smoothed if 2-D."""
        return to_target(y, self.num_classes, self.label_smoothing)

    @torch.no_grad()
    def mix_preview(self, x: Tensor, y: Tensor | None = None, generator: torch.Generator | None = None, *,
                    context: Any = None, reweight: Any = None) -> dict[str, Any]:
        """One mix of ``x`` for pictures: ``{"x", "partner", "mask", "mixed", "lam", "lam_partner"}`` on the CPU,
        plus what ``preview_parts`` adds.

        ``mask`` [N, 1, H, W] is the partner's weight at each pixel, read off by mixing a one-hot "sample id"
        probe, so it is right for every mixer (``resizemix`` included). ``lam`` [N] and ``lam_partner`` [N] are
        the label weights of the sample and of its partner (``1 - lam`` unless the draw has two, as SnapMix's).
        ``reweight(mixed, params) -> params`` sets the label weight from the model's view of the mixed batch
        (``MixerMethod`` passes it for TransMix), so ``lam`` is the one training would use. A sample paired with
        itself shows nothing, so the draw is repeated (a few times) until every sample has another partner.
        """
        if y is None:
            y = torch.zeros(x.shape[0], 1)
        self.check_input(x)
        self.check_targets(y, x.shape[0])
        for _ in range(20):  # drawn and applied here, not by __call__: a reweighting mixer's lam comes after
            params = self.sample(x, generator, context=context)
            mixed = self.apply(x, params)
            if x.shape[0] < 2 or bool((params.index != torch.arange(x.shape[0], device=params.index.device)).all()):
                break
        params = params if reweight is None else reweight(mixed, params)
        n, size = x.shape[0], tuple(x.shape[-2:])
        probe = torch.eye(n).view(n, n, 1, 1).expand(n, n, *size).contiguous()
        own = self.apply(probe.to(params.index.device), params)
        own = own[torch.arange(n), torch.arange(n)].unsqueeze(1).float().cpu()
        lam = params.lam.float().cpu()
        lam_partner = 1.0 - lam if params.lam_partner is None else params.lam_partner.float().cpu()
        parts = {"x": x.cpu(), "partner": x[params.index.to(x.device)].cpu(), "mask": 1.0 - own,
                 "mixed": mixed.detach().cpu(), "lam": lam, "lam_partner": lam_partner}
        extra = self.preview_parts(x, params)
        return {**parts, **{k: v.detach().cpu() if isinstance(v, Tensor) else v for k, v in extra.items()}}

    def preview_parts(self, x: Tensor, params: MixParams) -> dict[str, Any]:
        """What a picture of the draw ``params`` of ``x`` needs beyond the partner-weight blend (``mix_preview``):

        * ``"legend"``: lines (six, as ``automix.viz.LEGEND``) saying how the mix and its label weights are made,
          when ``mixed = (1 - mask) * x + mask * partner`` with weights ``(lam, 1 - lam)`` is not the whole truth;
        * ``"partner_region"``: bool [N, 1, H, W], the part of the partner the mix shows, when it is not where the
          mask is (SnapMix's source box, ResizeMix's whole partner); the picture outlines it on the partner;
        * ``"x"`` / ``"partner"``: the images as they are blended, when the mixer moves their content first
          (PuzzleMix's transport).

        The default (a plain blend) adds nothing.
        """
        return {}

    # ------------------------------------------------------------------ checks
    def check_input(self, x: Any) -> None:
        """``x`` must be a float batch, ``[B, C, *spatial]`` for spatial mixers (``automix._checks.check_batch``)."""
        check_batch("x", x, self.name, self.spatial_dims if self.spatial else None)

    def check_targets(self, y: Any, batch: int) -> None:
        check_targets("y", y, batch, self.num_classes, self.label_smoothing)

    def check_image_size(self, size: tuple[int, int]) -> None:
        """Raise ``ValueError`` (naming the option and ``size``) when an option cannot work on images of ``size``
        (H, W) in pixels: the checks a draw would make at the first batch, made before it (the trainer calls this
        before the run starts). The default checks nothing; a mixer whose options depend on the image size
        (TokenMix's token grid, MaskMix's cells, PuzzleMix's blocks) overrides it and runs it in its draw too."""

    # ------------------------------------------------------------------ for subclasses
    def _generator(self, generator: torch.Generator | None) -> torch.Generator:
        check_generator("generator", generator)
        if generator is not None:
            return generator
        if self.generator is None:
            return torch.default_generator  # torch already seeds it per worker and per epoch
        if get_worker_info() is not None:
            self._seed_for_worker()
        return self.generator

    def _seed_for_worker(self) -> None:
        """Give this DataLoader worker's copy of the mixer its own stream, once per worker process.

        Every worker starts from a copy of the main process's generator, so without this all workers draw
        the same lambdas, and draw them again every epoch (non-persistent workers are new copies each
        epoch). The state is derived from the mixer's seed, the worker id and the worker's seed (which torch
        draws per epoch from the loader's generator), so a seeded run is reproducible. Persistent workers
        keep their process and so their stream, which advances from epoch to epoch.
        """
        info = get_worker_info()
        key = (os.getpid(), info.id, info.seed)
        if self._worker_key == key:
            return
        text = f"{self.generator.initial_seed()}/{info.id}/{info.seed}".encode()
        self.generator.manual_seed(int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1)
        self._worker_key = key

    def _draw_lam(self, n: int, gen: torch.Generator) -> Tensor:
        """``n`` lambdas, float32 on ``gen.device``: from ``lam`` when given, else Beta(alpha, alpha)."""
        if self.lam_sampler is not None:
            return self.lam_sampler(n, gen)
        return sample_beta(self.alpha, n, gen)

    def _sample(self, x: Tensor, lam: Tensor, gen: torch.Generator, *, index: Tensor, context: Any = None
                ) -> Region:
        """What this mixer draws beyond lambda: its box or mask, and lam corrected to what they realise.

        Args:
            x: the batch [B, C, *spatial] (read only by content-dependent mixers).
            lam: float32 [n] drawn lambdas, ``n`` = 1 in batch mode, else B (1 for samples left unmixed).
            gen: the generator every further draw must come from (so a draw replays exactly).
            index: long [B] partner of each sample.
            context: the model's context for ``needs`` (None for static mixers).

        Returns a ``Region`` with tensors of ``n`` rows. The default (mixup) draws nothing more.
        """
        return Region()

    def _finish(self, params: MixParams, active: Tensor | None, device: torch.device) -> MixParams:
        """Share draws inside pairs, blank inactive samples and move tensors to the data's device."""
        index, lam, box, mask, lam_b = params.index, params.lam, params.box, params.mask, params.lam_partner
        if self.mode == "pair":
            leader = pair_leader(index)
            lam = lam[leader]
            lam_b = None if lam_b is None else lam_b[leader.to(lam_b.device)]
            box = None if box is None else box[leader.to(box.device)]
            mask = None if mask is None else mask[leader.to(mask.device)]
        if active is not None:
            lam = torch.where(active.to(lam.device), lam, torch.ones_like(lam))
            if lam_b is not None:
                lam_b = torch.where(active.to(lam_b.device), lam_b, torch.zeros_like(lam_b))
            if box is not None:
                box = box * active.to(box.device).unsqueeze(1)
            if mask is not None:
                keep = active.to(mask.device).view((-1,) + (1,) * (mask.ndim - 1))
                mask = mask & keep if mask.dtype == torch.bool else mask * keep
        lam_b = None if lam_b is None else lam_b.to(device=device, dtype=torch.float32)
        return replace(params, index=index.to(device), lam=lam.to(device=device, dtype=torch.float32),
                       lam_partner=lam_b,
                       box=None if box is None else box.cpu(),
                       mask=None if mask is None else mask.to(device))

    def _apply(self, t: Tensor, params: MixParams) -> Tensor:
        """Blend with the partner (``blend``); mixers whose mix is not a blend (resizemix) override it."""
        return blend(t, params)


@dataclass(frozen=True)
class GeneratorState:
    """A ``torch.Generator`` as plain data (device and state bytes), for pickling into DataLoader workers under any
    start method (``BaseMixer.__getstate__``)."""

    device: str
    state: bytes

    @classmethod
    def of(cls, generator: torch.Generator) -> GeneratorState:
        return cls(str(generator.device), bytes(generator.get_state().tolist()))

    def rebuild(self) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        generator.set_state(torch.frombuffer(bytearray(self.state), dtype=torch.uint8))
        return generator


def blend(t: Tensor, params: MixParams) -> Tensor:
    """Blend each sample of ``t`` with its partner by ``params.box`` / ``params.mask`` / ``1 - lam``.

    The one blend of every draw that is a partner weight (mixup, boxes, masks, AutoMix's and SAMix's Mix Block
    masks). ``t`` is [B, ...] with the draw's batch size (and spatial size for a box or mask). Gradients flow
    to ``t`` and to a mask that carries a graph (AutoMix trains its Mix Block through it).

    Every path allocates one full-size tensor where it can: the partner gather ``t[index]`` (which keeps
    channels_last), into which ``t`` is then blended in place. A second temporary would cost as much again
    (at 224px most of the time is faulting in fresh pages).
    """
    if not params.mixed:
        return t
    index = params.index.to(t.device)
    if params.box is not None:
        return _paste_box(t, index, params.box)
    if params.mask is not None:
        return _blend(t, index, params.mask)
    if params.mode == "batch" and params.lam.device.type == "cpu":
        return t[index].lerp_(t, float(params.lam[0]))
    w = params.lam.to(device=t.device, dtype=t.dtype).view((-1,) + (1,) * (t.ndim - 1))
    return t[index].lerp_(t, w)


def _blend(t: Tensor, index: Tensor, mask: Tensor) -> Tensor:
    """``t`` where the partner mask is 0, the partner where it is 1, interpolated in between."""
    mask = mask.to(t.device)
    out = t[index]
    if not t.is_floating_point():  # integer maps (segmentation): select, no interpolation
        keep = ~mask if mask.dtype == torch.bool else mask < 0.5
        return torch.where(keep, t, out)
    # t + mask * (partner - t): lerp is exact at weights 0 and 1, so hard masks select exactly. In place
    # (out= the partner gather) keeps one allocation; autograd cannot record out=, so with a graph to keep
    # (a learned mask, a batch that needs its gradient) the blend gets a tensor of its own.
    weight = mask.to(t.dtype)
    if torch.is_grad_enabled() and (t.requires_grad or weight.requires_grad):
        return torch.lerp(t, out, weight)
    return torch.lerp(t, out, weight, out=out)


def _paste_box(t: Tensor, index: Tensor, box: Tensor) -> Tensor:
    """Paste each partner's box region: one slice copy in batch mode, a masked blend otherwise."""
    dims = box.shape[1] // 2
    if box.shape[0] == 1:
        bounds = box[0].tolist()
        region = (Ellipsis,) + tuple(slice(bounds[2 * i], bounds[2 * i + 1]) for i in range(dims))
        out = t.clone()
        if all(bounds[2 * i + 1] > bounds[2 * i] for i in range(dims)):
            out[region] = t[region][index]
        return out
    return _blend(t, index, box_mask(box, t.shape[t.ndim - dims:], t.device))


def to_target(y: Tensor, num_classes: int | None, label_smoothing: float = 0.0) -> Tensor:
    """Class indices [B] -> (smoothed) one-hot float32 [B, num_classes]; float targets -> float32 (or wider)
    copy, smoothed over dim 1 when ``label_smoothing > 0``."""
    eps = label_smoothing
    if not y.is_floating_point():
        classes = num_classes
        off = eps / classes
        target = torch.full((y.shape[0], classes), off, dtype=torch.float32, device=y.device)
        return target.scatter_(1, y.long().unsqueeze(1), 1.0 - eps + off)
    target = y.to(torch.promote_types(y.dtype, torch.float32))
    if eps > 0:
        target = target * (1.0 - eps) + eps / target.shape[1]
    return target


def mix_targets(y: Tensor, params: MixParams, num_classes: int | None = None, label_smoothing: float = 0.0) -> Tensor:
    """Soft targets ``lam * y + (1 - lam) * y[index]`` of any draw, float32 (or y's wider float dtype);
    ``lam * y + lam_partner * y[index]`` when the draw has two label weights (SnapMix).

    ``y``: class ids [B] (give ``num_classes``) or float targets [B, ...] (one-hot, soft, multi-label or
    regression). The targets of every mixer and of the learned methods come from here.
    """
    if not params.mixed:
        return to_target(y, num_classes, label_smoothing)
    if not y.is_floating_point():
        # Class ids: scatter both weights straight into one [B, C] tensor (no one-hot copies).
        eps, classes = label_smoothing, num_classes
        lam = params.lam.to(device=y.device, dtype=torch.float32).unsqueeze(1)
        lam_b = 1.0 - lam if params.lam_partner is None else \
            params.lam_partner.to(device=y.device, dtype=torch.float32).unsqueeze(1)
        index = params.index.to(y.device)
        target = torch.full((y.shape[0], classes), eps / classes, dtype=torch.float32, device=y.device)
        target.scatter_add_(1, y.long().unsqueeze(1), lam * (1.0 - eps))
        return target.scatter_add_(1, y[index].long().unsqueeze(1), lam_b * (1.0 - eps))
    target = to_target(y, num_classes, label_smoothing)
    lam = params.lam.to(device=target.device, dtype=target.dtype)
    lam = lam.reshape((-1,) + (1,) * (target.ndim - 1))
    partner = target[params.index.to(target.device)]
    if params.lam_partner is not None:  # two label weights (SnapMix)
        lam_b = params.lam_partner.to(device=target.device, dtype=target.dtype).reshape(lam.shape)
        return lam * target + lam_b * partner
    return torch.lerp(partner, target, lam)


def mix_seg(seg: Tensor, params: MixParams, x: Tensor, apply: Any, *, hard: bool, who: str) -> Tensor:
    """Mix a segmentation target with the draw that mixed ``x`` [B, C, *spatial], through ``apply(t, params)``.

    ``seg`` is an integer map [B, *spatial] (only when the mask is hard, ``hard=True``) or a float one-hot /
    soft map [B, K, *spatial]. Raises ``ValueError`` for a shape that does not match ``x`` and ``TypeError``
    for an integer map under a soft mask (``who`` names the mixer or method).
    """
    check_tensor("seg", seg)
    spatial = tuple(x.shape[2:])
    if not spatial or seg.shape[0] != x.shape[0] or tuple(seg.shape[seg.ndim - len(spatial):]) != spatial:
        raise ValueError(f"seg must have shape [B, *spatial] or [B, C, *spatial] matching x {tuple(x.shape)}, "
                         f"got {tuple(seg.shape)}")
    if seg.is_floating_point():
        return apply(seg if seg.ndim == x.ndim else seg.unsqueeze(1), params).reshape(seg.shape)
    if not hard:
        raise TypeError(f"seg must be a float one-hot/soft map for {who}, whose mask is soft; got an "
                        f"integer map of dtype {seg.dtype} (one-hot it first)")
    if seg.ndim != x.ndim - 1:
        shape = {1: "[B, T]", 2: "[B, H, W]", 3: "[B, D, H, W]"}.get(len(spatial), "[B, *spatial]")
        raise ValueError(f"seg as class indices must be {shape}, got shape {tuple(seg.shape)}")
    return apply(seg.unsqueeze(1), params).squeeze(1)


def partner_weight(params: MixParams, size: tuple[int, ...], device: torch.device) -> Tensor:
    """The partner's weight of a blend draw: [N, 1, *size] for a box or mask, [B, 1, 1, ...] from lam."""
    if params.box is not None:
        return box_mask(params.box, size, device)
    if params.mask is not None:
        return params.mask.to(device)
    return (1.0 - params.lam.to(device)).view((-1,) + (1,) * (len(size) + 1))


def lam_from_mask(mask: Tensor) -> Tensor:
    """Weight of the sample itself implied by a partner mask [N, 1, *spatial]: ``1 - mean(mask)``."""
    return 1.0 - mask.float().mean(dim=tuple(range(1, mask.ndim)))


def check_spatial_size(name: str, size: tuple[int, ...], params: MixParams) -> None:
    if params.size is not None and tuple(size) != tuple(params.size):
        raise ValueError(f"{name} has spatial size {tuple(size)} but params were drawn for {params.size}")


__all__ = ["BaseMixer", "MixOutput", "MixParams", "Region", "MODES", "blend", "lam_from_mask", "mix_seg", "mix_targets",
           "partner_weight", "to_target", "check_spatial_size", "check_type"]
