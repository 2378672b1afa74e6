"""A given mixing weight: ``lam=`` as a fixed value, a range, a distribution or a function of the generator.

Every mixer that draws lambda (and AutoMix / SAMix, for both of theirs) takes ``lam=`` beside ``alpha``; ``None``
keeps the default Beta(alpha, alpha) draw, untouched. ``lam_sampler(lam)`` turns any accepted form into a
``LamSampler``, which draws ``n`` values as float32 on the generator's device, always from the generator it is
given, so a seeded draw repeats exactly and a mixer's draw can be replayed:

* a number in [0, 1]: that lambda for every mix (draws nothing from the generator);
* a pair ``(low, high)`` with ``0 <= low <= high <= 1``: uniform in the range (one ``torch.rand`` per value);
* a ``torch.distributions.Distribution`` of scalars (``batch_shape`` and ``event_shape`` both ``()``). Its
  ``sample()`` takes no generator, so it is drawn reproducibly another way, in this order:
  ``Beta`` by the Gamma-ratio construction of the default path (``sample_beta``); any distribution with an
  inverse CDF (``Uniform``, ``Kumaraswamy``, ``Normal``, most ``TransformedDistribution`` s) as ``icdf(u)``
  of ``u ~ U[0, 1)`` drawn with the generator; any other (``Bernoulli``, ``Gamma``, ...) by its own
  ``sample()`` inside ``torch.random.fork_rng``, under a seed drawn from the generator (one ``randint``, read
  back to the host), so torch's global generator is left as it was and the same generator state gives the
  same values;
* a callable ``fn(shape, generator) -> Tensor`` (shape ``(n,)``): anything else, e.g. the write-up's
  ``lambda shape, g: 0.5 * (1 - e) / (1 + e)`` with ``e = torch.rand(shape, generator=g)``; it must draw from
  ``generator`` for the draws to repeat;
* a mapping with one key, the form a YAML config can write (``--mixup-lam`` / ``method_opts: {lam: ...}``):
  ``{"beta": a}`` or ``{"beta": [a, b]}`` (Beta(a, a) / Beta(a, b)), ``{"uniform": [low, high]}`` (as the pair),
  ``{"eps": [low, high]}`` (the write-up's ``lam = (1 - eps) / (2 (1 + eps))`` with ``eps ~ U(low, high)``,
  ``0 <= low <= high <= 1``: ``[0, 1]`` gives lam in [0, 1/2]) and ``{"fold": <any form>}``
  (``max(lam, 1 - lam)``, as fastai folds lambda).

A value outside [0, 1] is a ``ValueError`` naming ``lam`` and the value: at construction for numbers, pairs and
specs, on the drawn values for distributions and callables (a check that reads one bool back to the host).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Beta, Distribution

from ._sampling import sample_beta

# The annotation of every ``lam=`` option: what ``automix._options`` checks a config's value against.
LamSpec = float | tuple[float, float] | Distribution | Callable[..., Tensor] | Mapping[str, Any]

SPEC_KEYS = ("beta", "uniform", "eps", "fold")


class LamSampler:
    """Draws lambdas from one ``lam=`` form (see the module docstring); build it with ``lam_sampler``.

    ``sampler(n, generator)`` returns float32 [n] on ``generator.device``, every value in [0, 1].

    Attributes:
        spec: the value the user gave (for ``repr`` and for passing on to sub-mixers).
        kind: ``"fixed"``, ``"uniform"``, ``"beta"``, ``"eps"``, ``"fold"``, ``"icdf"``, ``"forked"`` or
            ``"callable"``: how it draws.
        constant: the one value every draw gives (a number, or ``{"fold": number}``), else None. A method that
            draws several lambdas at once and normalises them (AdAutoMix with K > 2 images) reads it, since K
            equal values would normalise to 1 / K whatever the number.
    """

    def __init__(self, spec: Any, kind: str, draw: Callable[[int, torch.Generator], Tensor], name: str,
                 checked: bool, constant: float | None = None) -> None:
        self.spec, self.kind, self.name = spec, kind, name
        self._draw = draw
        self._checked = checked  # True when every draw is in [0, 1] by construction
        self.constant = constant

    def __repr__(self) -> str:
        return f"LamSampler({self.spec!r}, kind={self.kind!r})"

    def __reduce__(self) -> tuple[Any, tuple[Any, str]]:
        # Rebuilt from what the user gave (the draw functions are closures): a mixer holding a sampler pickles
        # into spawned DataLoader workers whenever its ``lam`` itself pickles.
        return lam_sampler, (self.spec, self.name)

    def __call__(self, n: int, generator: torch.Generator) -> Tensor:
        lam = self._draw(n, generator)
        if not self._checked:
            lam = _as_draw(lam, n, generator, self.name, self.spec)
            bad = ~((lam >= 0) & (lam <= 1))  # NaN is bad too
            if bool(bad.any()):
                value = float(lam[bad][0])
                raise ValueError(f"{self.name} must draw values in [0, 1]; {self.spec!r} drew {value!r} "
                                 f"({int(bad.sum())} of {n} outside)")
        return lam


def lam_sampler(lam: Any, name: str = "lam") -> LamSampler | None:
    """The ``LamSampler`` of a ``lam=`` value, or None for ``None`` (the caller's Beta(alpha, alpha)).

    Args:
        lam: a number, a ``(low, high)`` pair, a scalar ``torch.distributions.Distribution``, a callable
            ``(shape, generator) -> Tensor`` or a one-key spec mapping (module docstring).
        name: the argument named in errors (``"lam"``, ``"mixup_lam"``).

    Raises:
        ValueError: a number or range outside [0, 1], ``low > high``, a non-scalar distribution, an unknown or
            ill-formed spec key (each names ``name`` and the value).
        TypeError: any other type.

    >>> import torch
    >>> gen = torch.Generator().manual_seed(0)
    >>> lam_sampler(0.2)(3, gen)
    tensor([0.2000, 0.2000, 0.2000])
    >>> bool(((lambda d: (d >= 0.1) & (d <= 0.4))(lam_sampler((0.1, 0.4))(100, gen))).all())
    True
    >>> lam_sampler({"eps": [0, 1]})(1000, gen).max() <= 0.5
    tensor(True)
    """
    if lam is None:
        return None
    if isinstance(lam, LamSampler):
        return lam
    if isinstance(lam, bool):
        raise TypeError(f"{name} must be a number, a (low, high) pair, a Distribution, a callable or a spec "
                        f"mapping, got bool {lam!r}")
    if isinstance(lam, (int, float)):
        value = _unit(name, lam, lam)

        def fixed(n: int, gen: torch.Generator) -> Tensor:
            return torch.full((n,), value, dtype=torch.float32, device=gen.device)

        return LamSampler(lam, "fixed", fixed, name, checked=True, constant=value)
    if isinstance(lam, (tuple, list)):
        low, high = _range(name, lam, lam)
        return LamSampler(lam, "uniform", _uniform(low, high), name, checked=True)
    if isinstance(lam, Distribution):
        return _from_distribution(lam, name)
    if isinstance(lam, Mapping):
        return _from_spec(lam, name)
    if callable(lam):
        try:
            inspect.signature(lam).bind((1,), torch.Generator())
        except TypeError:
            raise TypeError(f"{name} as a callable must take (shape, generator), got {lam!r} with signature "
                            f"{inspect.signature(lam)}") from None
        except ValueError:  # no signature to read (some builtins): the first draw will tell
            pass
        return LamSampler(lam, "callable", lambda n, gen: lam((n,), gen), name, checked=False)
    raise TypeError(f"{name} must be a number, a (low, high) pair, a Distribution, a callable or a spec mapping, "
                    f"got {type(lam).__name__} {lam!r}")


def refuse_alpha_with_lam(options: Mapping[str, Any], who: str) -> None:
    """Raise ``ValueError`` when ``options`` (the keyword arguments a user gave) hold both ``alpha`` and a ``lam``:
    a given lambda replaces the Beta(alpha, alpha) draw, so the alpha would be silently unused."""
    if options.get("lam") is not None and "alpha" in options:
        raise ValueError(f"alpha={options['alpha']!r} is not used when lam={options['lam']!r} gives lambda "
                         f"({who}); give one of them")


def refusing_alpha_with_lam(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a constructor so that a call giving both ``alpha`` and a ``lam`` is refused (``refuse_alpha_with_lam``).

    ``BaseMixer`` and ``Method`` wrap their own ``__init__`` and every subclass's (``__init_subclass__``), so every
    way of building a mixer or method shares the check: ``create_mixer``, ``create_method``, the trainer and a class
    called directly. It reads the call itself because only the call tells a given ``alpha`` from the default one
    (inside ``__init__`` both are a value), and ``Mixup(alpha=1.0, lam=0.3)`` is as void as
    ``Mixup(alpha=0.4, lam=0.3)``. Only the outermost constructor of an instance checks (the user's arguments; a
    ``super().__init__(alpha, ...)`` inside passes the default on). A call that does not fit the signature is left
    to the constructor, which raises Python's own ``TypeError``. The signature stays the constructor's
    (``functools.wraps``), for ``inspect`` and ``help``.
    """
    if getattr(init, "__refuses_alpha_with_lam__", False):
        return init

    @functools.wraps(init)
    def checked(self: Any, *args: Any, **kwargs: Any) -> None:
        state = self.__dict__
        if state.get(_CHECKED):  # an inner constructor (super().__init__) of an instance being checked
            return init(self, *args, **kwargs)
        sig = _signature(init)
        try:
            bound = dict(sig.bind_partial(self, *args, **kwargs).arguments)
        except TypeError:
            bound = {}
        for name, param in sig.parameters.items():
            if param.kind is inspect.Parameter.VAR_KEYWORD and name in bound:
                bound.update(bound.pop(name))  # alpha / lam passed on through **kwargs
        refuse_alpha_with_lam(bound, type(self).__name__)
        state[_CHECKED] = True
        try:
            return init(self, *args, **kwargs)
        finally:
            state.pop(_CHECKED, None)

    checked.__refuses_alpha_with_lam__ = True
    return checked


_CHECKED = "_automix_checking_alpha_with_lam"  # set on an instance while its outermost constructor runs


@functools.cache
def _signature(init: Callable[..., None]) -> inspect.Signature:
    return inspect.signature(init)


def alpha_or_lam(alpha: float, lam: Any) -> dict[str, Any]:
    """The keyword arguments with which a method hands its ``alpha`` or ``lam`` on to the mixer it builds: ``lam``
    when given (the alpha is then unused, and a mixer refuses the two together), else ``alpha``."""
    return {"lam": lam} if lam is not None else {"alpha": alpha}


def _unit(name: str, value: Any, shown: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must hold numbers in [0, 1], got {type(value).__name__} {value!r} in {shown!r}")
    if not 0.0 <= value <= 1.0:  # NaN fails too
        where = "" if shown is value else f" in {shown!r}"
        raise ValueError(f"{name} must be in [0, 1], got {value!r}{where}")
    return float(value)


def _range(name: str, pair: Any, shown: Any) -> tuple[float, float]:
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"{name} as a range must be a (low, high) pair, got {shown!r}")
    low, high = _unit(name, pair[0], shown), _unit(name, pair[1], shown)
    if low > high:
        raise ValueError(f"{name} as a range must have low <= high, got {shown!r}")
    return low, high


def _uniform(low: float, high: float) -> Callable[[int, torch.Generator], Tensor]:
    def draw(n: int, gen: torch.Generator) -> Tensor:
        return low + (high - low) * torch.rand(n, generator=gen, device=gen.device)

    return draw


def _beta(a: float, b: float) -> Callable[[int, torch.Generator], Tensor]:
    def draw(n: int, gen: torch.Generator) -> Tensor:
        return sample_beta(a, n, gen) if a == b else sample_beta(a, n, gen, beta=b)

    return draw


def _positive(name: str, value: Any, shown: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} needs finite concentrations > 0, got {shown!r}")
    return float(value)


def _from_spec(spec: Mapping[str, Any], name: str) -> LamSampler:
    if len(spec) != 1 or next(iter(spec)) not in SPEC_KEYS:
        raise ValueError(f"{name} as a mapping must have one key of {list(SPEC_KEYS)}, got {dict(spec)!r}")
    (key, value), = spec.items()
    shown = dict(spec)
    if key == "beta":
        pair = value if isinstance(value, (tuple, list)) else (value, value)
        if len(pair) != 2:
            raise ValueError(f"{name} {{'beta': ...}} takes a or [a, b], got {shown!r}")
        a, b = _positive(name, pair[0], shown), _positive(name, pair[1], shown)
        return LamSampler(spec, "beta", _beta(a, b), name, checked=True)
    if key == "uniform":
        return LamSampler(spec, "uniform", _uniform(*_range(name, value, shown)), name, checked=True)
    if key == "eps":
        eps = _uniform(*_range(name, value, shown))

        def writeup(n: int, gen: torch.Generator) -> Tensor:
            e = eps(n, gen)
            return 0.5 * (1.0 - e) / (1.0 + e)

        return LamSampler(spec, "eps", writeup, name, checked=True)
    inner = lam_sampler(value, name)
    if inner is None:
        raise ValueError(f"{name} {{'fold': ...}} needs a lam form to fold, got {shown!r}")

    def fold(n: int, gen: torch.Generator) -> Tensor:
        lam = inner(n, gen)
        return torch.maximum(lam, 1.0 - lam)

    constant = None if inner.constant is None else max(inner.constant, 1.0 - inner.constant)
    return LamSampler(spec, "fold", fold, name, checked=True, constant=constant)  # inner checks its own draws


def _from_distribution(dist: Distribution, name: str) -> LamSampler:
    if dist.batch_shape != () or dist.event_shape != ():
        raise ValueError(f"{name} as a Distribution must be of scalars (batch_shape () and event_shape ()), got "
                         f"{dist!r} with batch_shape {tuple(dist.batch_shape)} and event_shape "
                         f"{tuple(dist.event_shape)}")
    if type(dist) is Beta:
        a, b = float(dist.concentration1), float(dist.concentration0)
        return LamSampler(dist, "beta", _beta(a, b), name, checked=True)
    try:
        dist.icdf(torch.tensor(0.5, device=_device_of(dist)))
        kind = "icdf"
    except NotImplementedError:
        kind = "forked"

    def by_icdf(n: int, gen: torch.Generator) -> Tensor:
        return dist.icdf(torch.rand(n, generator=gen, device=gen.device).to(_device_of(dist)))

    def forked(n: int, gen: torch.Generator) -> Tensor:
        seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))
        cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            return dist.sample((n,))

    return LamSampler(dist, kind, by_icdf if kind == "icdf" else forked, name, checked=False)


def _device_of(dist: Distribution) -> torch.device:
    for value in vars(dist).values():
        if isinstance(value, Tensor):
            return value.device
    return torch.device("cpu")


def _as_draw(lam: Any, n: int, gen: torch.Generator, name: str, spec: Any) -> Tensor:
    if not isinstance(lam, Tensor) or lam.numel() != n:
        got = f"shape {tuple(lam.shape)}" if isinstance(lam, Tensor) else type(lam).__name__
        raise ValueError(f"{name} {spec!r} must give a tensor of {n} values for shape ({n},), got {got}")
    return lam.reshape(n).to(device=gen.device, dtype=torch.float32)


__all__ = ["LamSampler", "LamSpec", "lam_sampler"]
