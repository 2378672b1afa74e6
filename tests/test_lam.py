"""``lam=``: a given mixing weight (fixed, a range, a distribution, a callable, a YAML spec) for every mixer that
draws one and for AutoMix / SAMix; drawn through the mixer's generator, replayable, bad values named."""

from __future__ import annotations

import argparse
import inspect
import pickle

import pytest
import torch
from conftest import NUM_CLASSES, build_mixer
from torch.distributions import AffineTransform, Bernoulli, Beta, Kumaraswamy, TransformedDistribution, Uniform

import automix
from automix.mixers._lam import lam_sampler

MODES = ("batch", "pair", "elem")
# Every registered mixer but smoothmix and guidedmix, whose ratio is the realised share of a blob / the saliency
# maps' (no lambda is drawn).
DRAWING = [n for n in automix.list_mixers() if n not in ("smoothmix", "guidedmix")]
# SnapMix's label weights come from each sample's own CAM: it has no pair mode.
REFUSED = {("snapmix", "pair")}
# Mixers that report the drawn lam as it is (no correction to a realised area).
UNCORRECTED = {"mixup": {}, "cutmix": {"correct_lam": False}, "fmix": {"correct_lam": False},
               "saliencymix": {"correct_lam": False},
               "mix_choice": {"mixers": ["mixup", ("cutmix", {"correct_lam": False})]},
               "mixup_cutmix": {"mixup_alpha": 1.0, "cutmix_alpha": 1.0, "correct_lam": False}}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(n: int = 7):
    g = gen(0)
    return torch.rand(n, 3, 16, 16, generator=g), torch.randint(0, NUM_CLASSES, (n,), generator=g)


def record_drawn(mixer) -> list[torch.Tensor]:
    """Wrap the ``_sample`` of ``mixer`` (and of a switch's mixers, and of the switch inside TransMix) to record the
    lambdas it is handed."""
    seen: list[torch.Tensor] = []
    inner = getattr(mixer, "inner", None)  # TransMix draws through its Mixup / CutMix switch
    parts = [mixer, *getattr(mixer, "mixers", [])] + ([inner, *getattr(inner, "mixers", [])] if inner else [])
    for m in parts:
        def wrap(real):
            def _sample(x, lam, g, **kw):
                seen.append(lam.clone())
                return real(x, lam, g, **kw)
            return _sample
        m._sample = wrap(m._sample)
    return seen


# ---------------------------------------------------------------- a fixed lambda


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", DRAWING)
def test_fixed_lam_is_the_drawn_lam_of_every_mixer(name, mode):
    if (name, mode) in REFUSED:
        pytest.skip(f"{name} refuses mode {mode!r}")
    mixer = build_mixer(name, mode=mode, lam=0.2)
    seen = record_drawn(mixer)
    x, y = batch()
    mixer.sample(x, gen(1))  # the draw (a bare call of a reweighting mixer, TransMix, is refused)
    drawn = torch.cat(seen)
    fixed = torch.tensor(0.2, dtype=torch.float32)
    assert seen and bool((drawn == fixed).any())
    # A switch hands each of its mixers lam 1 for the samples it did not pick (they stay unmixed by it).
    assert bool(((drawn == fixed) | (drawn == 1)).all()), drawn
    if name not in ("mix_choice", "mixup_cutmix", "transmix"):
        assert bool((drawn == fixed).all()), drawn


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(UNCORRECTED))
def test_fixed_lam_is_exactly_every_samples_lam(name, mode):
    mixer = build_mixer(name, mode=mode, lam=0.2, **UNCORRECTED[name])
    x, y = batch()
    out = mixer(x, y, gen(1))
    assert torch.equal(out.lam, torch.full((7,), 0.2)), out.lam
    onehot = torch.nn.functional.one_hot(y, NUM_CLASSES).float()
    torch.testing.assert_close(out.y, 0.2 * onehot + 0.8 * onehot[out.index])


def test_box_and_mask_mixers_still_report_the_realised_lam():
    x, y = batch(6)
    for name in ("cutmix", "fmix", "gridmix", "resizemix", "saliencymix"):
        for mode in MODES:
            mixer = build_mixer(name, mode=mode, lam=(0.3, 0.7))
            params = mixer.sample(x, gen(2))
            probe = torch.eye(6).view(6, 6, 1, 1).expand(6, 6, 16, 16).contiguous()
            own = mixer.apply(probe, params)[torch.arange(6), torch.arange(6)].mean(dim=(1, 2))
            moved = params.index != torch.arange(6)
            torch.testing.assert_close(own[moved], params.lam[moved], atol=2e-3, rtol=0)


def test_resizemix_pastes_an_area_of_one_minus_lam():
    mixer = automix.create_mixer("resizemix", lam=0.36, mode="elem")
    params = mixer.sample(torch.rand(8, 3, 32, 32), gen(0))
    # Side sqrt(0.64) * 32 = 25.6 -> 26 pixels: lam 1 - 26 * 26 / 1024 = 0.34 (whole pixels).
    assert bool(((params.lam - 0.36).abs() < 0.03).all()), params.lam


def test_fixed_lam_zero_and_one():
    x, y = batch()
    out = build_mixer("mixup", lam=1.0)(x, y, gen(0))
    assert torch.equal(out.x, x)
    out = build_mixer("mixup", lam=0, mode="elem")(x, y, gen(0))
    assert torch.equal(out.x, x[out.index])


# ---------------------------------------------------------------- a range


@pytest.mark.parametrize("mode", MODES)
def test_range_stays_inside_and_covers_it(mode):
    mixer = automix.create_mixer("mixup", lam=(0.1, 0.4), mode=mode)
    if mode == "batch":  # one draw per batch: many batches
        lams = torch.stack([mixer.sample(torch.rand(4, 2), gen(s)).lam[0] for s in range(400)])
    else:
        lams = mixer.sample(torch.rand(4000, 2), gen(0)).lam
    assert float(lams.min()) >= 0.1 and float(lams.max()) <= 0.4
    assert float(lams.min()) < 0.11 and float(lams.max()) > 0.39
    counts = torch.histc(lams, bins=3, min=0.1, max=0.4)
    assert bool((counts > 0.25 * lams.numel()).all()), counts  # about a third in each third


def test_a_range_of_one_point_is_that_value():
    lam = lam_sampler([0.3, 0.3])(5, gen(0))
    assert torch.equal(lam, torch.full((5,), 0.3))


# ---------------------------------------------------------------- distributions and callables


DISTRIBUTIONS = {
    "beta": (Beta(2.0, 5.0), "beta"),
    "icdf": (Kumaraswamy(2.0, 3.0), "icdf"),
    "uniform": (Uniform(0.2, 0.6), "icdf"),
    "forked": (TransformedDistribution(Beta(2.0, 2.0), [AffineTransform(0.0, 0.5)]), "forked"),
    "discrete": (Bernoulli(0.3), "forked"),
}


@pytest.mark.parametrize("key", sorted(DISTRIBUTIONS))
def test_distribution_is_drawn_through_the_generator(key):
    dist, kind = DISTRIBUTIONS[key]
    mixer = automix.create_mixer("mixup", lam=dist, mode="elem")
    assert mixer.lam_sampler.kind == kind
    x = torch.rand(64, 4)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = mixer.sample(x, gen(5)).lam
    b = mixer.sample(x, gen(5)).lam
    c = mixer.sample(x, gen(6)).lam
    assert torch.equal(torch.get_rng_state(), before), "torch's global generator is left alone"
    assert torch.equal(a, b), "same seed, same draws"
    assert not torch.equal(a, c), "another seed, other draws"
    # The mixer's own generator (given at construction) is what it draws from.
    own = automix.create_mixer("mixup", lam=dist, mode="elem", generator=gen(5))
    assert torch.equal(own.sample(x).lam, a)


def test_distributions_give_their_distribution():
    g = gen(0)
    beta = lam_sampler(Beta(2.0, 5.0))(20000, g)
    assert abs(float(beta.mean()) - 2 / 7) < 0.01
    uniform = lam_sampler(Uniform(0.2, 0.6))(20000, g)
    assert float(uniform.min()) >= 0.2 and float(uniform.max()) <= 0.6 and abs(float(uniform.mean()) - 0.4) < 0.01
    forked = lam_sampler(DISTRIBUTIONS["forked"][0])(20000, g)
    assert float(forked.max()) <= 0.5 and abs(float(forked.mean()) - 0.25) < 0.01
    coin = lam_sampler(Bernoulli(0.3))(20000, g)
    assert set(coin.unique().tolist()) == {0.0, 1.0} and abs(float(coin.mean()) - 0.3) < 0.02


def test_a_beta_distribution_draws_as_the_default_path():
    """A Beta lam (object or spec) is the Gamma-ratio draw of alpha: the same values, from the same generator."""
    x, y = batch()
    default = build_mixer("mixup", alpha=0.4, mode="elem")(x, y, gen(3))
    for lam in (Beta(0.4, 0.4), {"beta": 0.4}, {"beta": [0.4, 0.4]}):
        given = build_mixer("mixup", lam=lam, mode="elem")(x, y, gen(3))
        assert torch.equal(given.lam, default.lam) and torch.equal(given.x, default.x)


def test_callable_gets_the_shape_and_the_generator():
    calls = []

    def draw(shape, generator):
        calls.append((shape, generator))
        return torch.rand(shape, generator=generator) * 0.5

    g = gen(0)
    mixer = automix.create_mixer("cutmix", lam=draw, mode="elem")
    mixer.sample(torch.rand(5, 3, 8, 8), g)
    assert calls == [((5,), g)]
    mixer = automix.create_mixer("cutmix", lam=draw, mode="batch")
    mixer.sample(torch.rand(5, 3, 8, 8), g)
    assert calls[-1] == ((1,), g)


def test_the_writeups_eps_formula():
    """lam = (1 - eps) / (2 (1 + eps)), eps ~ U(0, 1): lam in [0, 1/2], drawn from the generator."""
    lam = lam_sampler({"eps": [0, 1]})(5000, gen(0))
    eps = torch.rand(5000, generator=gen(0))
    torch.testing.assert_close(lam, 0.5 * (1 - eps) / (1 + eps))
    assert float(lam.min()) >= 0 and float(lam.max()) <= 0.5 and float(lam.max()) > 0.49


def test_fold_keeps_the_larger_share():
    lam = lam_sampler({"fold": {"beta": 0.4}})(1000, gen(0))
    raw = lam_sampler({"beta": 0.4})(1000, gen(0))
    assert torch.equal(lam, torch.maximum(raw, 1 - raw)) and float(lam.min()) >= 0.5


# ---------------------------------------------------------------- replay


@pytest.mark.parametrize("lam", [0.3, (0.2, 0.5), Kumaraswamy(2.0, 3.0), {"eps": [0, 1]}], ids=str)
@pytest.mark.parametrize("name", DRAWING)
def test_replay_with_a_given_lam_is_bit_equal(name, lam):
    x, y = batch(5)
    mixer = build_mixer(name, mode="elem", lam=lam)
    # Drawn by sample, replayed by the call: every mixer, TransMix too (a bare call of it is refused)
    first = mixer(x, y, params=mixer.sample(x, gen(9)))
    again = mixer(x, y, params=first.params)
    assert torch.equal(first.x, again.x) and torch.equal(first.y, again.y)
    seeded = mixer(x, y, params=mixer.sample(x, gen(9)))
    assert torch.equal(first.x, seeded.x) and torch.equal(first.lam, seeded.lam)


def test_a_mixer_with_lam_pickles():
    """DataLoader workers started by spawn get the mixer pickled: its sampler rebuilds from lam."""
    for lam in (0.2, [0.1, 0.4], Uniform(0.1, 0.3), {"fold": {"eps": [0, 1]}}):
        mixer = automix.create_mixer("mixup", lam=lam, mode="elem")
        copy = pickle.loads(pickle.dumps(mixer))
        x = torch.rand(6, 2)
        assert torch.equal(copy.sample(x, gen(1)).lam, mixer.sample(x, gen(1)).lam)


# ---------------------------------------------------------------- bad values


@pytest.mark.parametrize(("lam", "error", "match"), [
    (1.5, ValueError, r"lam must be in \[0, 1\], got 1.5"),
    (-0.2, ValueError, r"lam must be in \[0, 1\], got -0.2"),
    (float("nan"), ValueError, r"lam must be in \[0, 1\], got nan"),
    ((0.7, 0.2), ValueError, r"lam as a range must have low <= high, got \(0.7, 0.2\)"),
    ((-0.1, 0.5), ValueError, r"lam must be in \[0, 1\], got -0.1 in \(-0.1, 0.5\)"),
    ((0.1, 0.2, 0.3), ValueError, r"lam as a range must be a \(low, high\) pair, got \(0.1, 0.2, 0.3\)"),
    (("a", 0.5), TypeError, r"lam must hold numbers in \[0, 1\], got str 'a'"),
    ("0.2", TypeError, r"lam must be a number, a \(low, high\) pair, a Distribution, a callable or a spec mapping, "
                       r"got str '0.2'"),
    (True, TypeError, r"lam must be a number.*got bool True"),
    ({"gamma": 2}, ValueError, r"lam as a mapping must have one key of \['beta', 'uniform', 'eps', 'fold'\], "
                               r"got \{'gamma': 2\}"),
    ({"beta": [0.0, 1.0]}, ValueError, r"lam needs finite concentrations > 0, got \{'beta': \[0.0, 1.0\]\}"),
    ({"eps": [0, 2]}, ValueError, r"lam must be in \[0, 1\], got 2 in \{'eps': \[0, 2\]\}"),
    (Beta(torch.tensor([2.0, 3.0]), torch.tensor([2.0, 3.0])), ValueError, r"lam as a Distribution must be of "
                                                                           r"scalars.*batch_shape \(2,\)"),
], ids=repr)
def test_bad_lam_is_named(lam, error, match):
    with pytest.raises(error, match=match):
        automix.create_mixer("mixup", lam=lam)


@pytest.mark.parametrize("lam", [Uniform(0.5, 1.5), lambda shape, g: 1.0 + torch.rand(shape, generator=g),
                                 {"fold": lambda shape, g: torch.full(shape, -0.5)}], ids=["dist", "callable", "fold"])
def test_drawn_values_outside_the_unit_interval_are_named(lam):
    mixer = automix.create_mixer("mixup", lam=lam, mode="elem")
    with pytest.raises(ValueError, match=r"lam must draw values in \[0, 1\]; .* drew -?[0-9.]+ \(\d+ of 64 outside\)"):
        mixer.sample(torch.rand(64, 2), gen(0))


def test_a_callable_of_the_wrong_shape_is_named():
    mixer = automix.create_mixer("mixup", lam=lambda shape, g: torch.rand(3), mode="elem")
    with pytest.raises(ValueError, match=r"lam .* must give a tensor of 5 values for shape \(5,\), got shape \(3,\)"):
        mixer.sample(torch.rand(5, 2), gen(0))


def test_a_callable_of_the_wrong_signature_is_named():
    with pytest.raises(TypeError, match=r"lam as a callable must take \(shape, generator\), got .* signature \(n\)"):
        automix.create_mixer("mixup", lam=lambda n: torch.rand(n))
    with pytest.raises(TypeError, match=r"mixup_lam as a callable must take \(shape, generator\)"):
        lam_sampler(lambda: 0.5, "mixup_lam")
    assert lam_sampler(lambda *args: torch.full(args[0], 0.5)).kind == "callable"  # *args binds


def test_alpha_beside_a_given_lam_is_refused():
    with pytest.raises(ValueError, match=r"alpha=0.4 is not used when lam=0.2 gives lambda \(mixer 'mixup'\)"):
        automix.create_mixer("mixup", alpha=0.4, lam=0.2)
    model = tiny_model()
    with pytest.raises(ValueError, match=r"alpha=2.0 is not used when lam=\[0.1, 0.3\] gives lambda "
                                         r"\(method 'automix'\)"):
        automix.create_method("automix", model, num_classes=4, alpha=2.0, lam=[0.1, 0.3])
    with pytest.raises(ValueError, match=r"alpha=0.4 is not used when lam=0.3 gives lambda \(method 'cutmix'\)"):
        from automix.train.build import build_method
        build_method(parse(["--method", "cutmix", "--alpha", "0.4", "--method-opt", "lam=0.3"]), model, 4, 10, 0)
    assert automix.create_mixer("mixup", alpha=0.4, lam=None).alpha == 0.4  # lam=None is no lam


def test_lam_where_something_else_sets_the_ratio_is_refused():
    with pytest.raises(ValueError, match="lam=0.3 does not apply to smoothmix"):
        automix.create_mixer("smoothmix", lam=0.3)
    with pytest.raises(ValueError, match="lam=0.3 does not apply to guidedmix"):
        automix.create_mixer("guidedmix", lam=0.3)
    with pytest.raises(ValueError, match=r"cutmix_minmax=\(0.2, 0.8\) sizes the box, but lam=0.3 is given"):
        automix.create_mixer("cutmix", lam=0.3, cutmix_minmax=(0.2, 0.8))
    with pytest.raises(ValueError, match=r"cutmix_minmax=.* sizes the box, but lam=0.3 is given"):
        automix.create_mixer("mixup_cutmix", mixup_alpha=1.0, cutmix_minmax=(0.2, 0.8), lam=0.3)
    with pytest.raises(ValueError, match="reformulate=True draws lam from Beta"):
        automix.create_mixer("fmix", lam=0.3, reformulate=True)
    with pytest.raises(ValueError, match="use_alpha=True draws the box scale"):
        automix.create_mixer("resizemix", lam=0.3, use_alpha=True)


def test_switch_shares_lam_with_the_mixers_it_builds():
    switch = automix.create_mixer("mix_choice", mixers=["mixup", ("cutmix", {"lam": 0.7}), automix.create_mixer(
        "fmix")], lam=0.2)
    assert [m.lam for m in switch.mixers] == [0.2, 0.7, None]  # a pair's kwargs win; objects keep their own


# ---------------------------------------------------------------- AutoMix and SAMix


def tiny_model():
    return automix.create_model("preact_resnet18", num_classes=4, width=4)


@pytest.mark.parametrize("name", ["automix", "samix"])
def test_learned_methods_take_lam_for_both_lambdas(name):
    x, y = torch.rand(4, 3, 32, 32, generator=gen(0)), torch.randint(0, 4, (4,), generator=gen(0))
    method = automix.create_method(name, tiny_model(), num_classes=4, total_steps=5, seed=0, lam=0.3)
    _, logs = method.training_step(x, y)
    fixed = float(torch.tensor(0.3))
    assert float(logs["lam_mb"]) == fixed and float(logs["lam_bb"]) == fixed
    assert float(method.last_mix["lam_bb"]) == fixed
    for lam in ((0.3, 0.6), {"beta": [2, 5]}, Kumaraswamy(2.0, 3.0)):
        logs = [automix.create_method(name, tiny_model(), num_classes=4, total_steps=5, seed=s, lam=lam)
                .training_step(x, y)[1] for s in (1, 1, 2)]
        assert float(logs[0]["lam_mb"]) == float(logs[1]["lam_mb"]), "same seed, same draws"
        assert float(logs[0]["lam_mb"]) != float(logs[2]["lam_mb"]), "another seed, other draws"
        if isinstance(lam, tuple):
            assert all(0.3 <= float(lg[k]) <= 0.6 for lg in logs for k in ("lam_mb", "lam_bb"))
    with pytest.raises(ValueError, match=r"lam must be in \[0, 1\], got 1.5"):
        automix.create_method(name, tiny_model(), num_classes=4, lam=1.5)
    with pytest.raises(TypeError, match=rf"option lam='high' for method '{name}' must be"):
        automix.create_method(name, tiny_model(), num_classes=4, lam="high")


def test_automix_preview_draws_from_lam():
    method = automix.create_method("automix", tiny_model(), num_classes=4, total_steps=5, lam=0.25)
    parts = method.mix_preview(torch.rand(4, 3, 32, 32))
    assert torch.equal(parts["lam"], torch.full((4,), 0.25))


# ---------------------------------------------------------------- the trainer


def parse(argv: list[str]):
    from automix.train.args import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser(exit_on_error=False)
    add_config_arguments(parser)
    return config_from_args(parser.parse_args(argv))


@pytest.mark.parametrize(("text", "value", "kind"), [
    ("0.2", 0.2, "fixed"), ("[0.1, 0.4]", [0.1, 0.4], "uniform"), ("{beta: [2, 5]}", {"beta": [2, 5]}, "beta"),
    ("{uniform: [0.1, 0.3]}", {"uniform": [0.1, 0.3]}, "uniform"), ("{eps: [0, 1]}", {"eps": [0, 1]}, "eps"),
    ("{fold: {beta: 0.4}}", {"fold": {"beta": 0.4}}, "fold"),
])
def test_mixup_lam_flag_reaches_the_mixer(text, value, kind):
    from automix.train.build import build_method

    for method in ("mixup", "cutmix", "automix"):
        cfg = parse(["--method", method, "--mixup-lam", text])
        assert cfg.mixup_lam == value
        built = build_method(cfg, tiny_model(), 4, 10, 0)
        sampler = (built.mixer if hasattr(built, "mixer") else built).lam_sampler
        assert sampler.kind == kind and sampler.spec == value


def test_mixup_lam_from_yaml_and_method_opts(tmp_path):
    import yaml

    from automix.train.build import build_method

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"method": "mixup_cutmix", "mixup": 0.8, "cutmix": 1.0, "mixup_lam": [0.2, 0.3]}))
    cfg = parse(["--config", str(path)])
    switch = build_method(cfg, tiny_model(), 4, 10, 0).mixer
    assert [m.lam for m in switch.mixers] == [[0.2, 0.3], [0.2, 0.3]]
    path.write_text(yaml.safe_dump({"method": "samix", "method_opts": {"lam": {"eps": [0, 1]}}}))
    assert build_method(parse(["--config", str(path)]), tiny_model(), 4, 10, 0).lam_sampler.kind == "eps"
    cfg = parse(["--method", "fmix", "--method-opt", "lam=[0.1, 0.2]"])
    assert build_method(cfg, tiny_model(), 4, 10, 0).mixer.lam == [0.1, 0.2]


@pytest.mark.parametrize(("argv", "error", "match"), [
    (["--method", "mixup", "--mixup-lam", "1.5"], ValueError, r"--mixup-lam must be in \[0, 1\], got 1.5"),
    (["--method", "mixup", "--mixup-lam", "[0.7, 0.2]"], ValueError, r"--mixup-lam as a range must have low <= high"),
    (["--method", "mixup", "--mixup-lam", "high"], TypeError,
     r"--mixup-lam must be a number or a list or a mapping, got 'high'"),
    (["--method", "mixup", "--mixup-lam", "{gamma: 1}"], ValueError, r"--mixup-lam as a mapping must have one key"),
    (["--method", "none", "--mixup-lam", "0.2"], ValueError, r"--mixup-lam 0.2 applies to the methods that draw "
                                                             r"lambda .* not to method 'none'"),
    (["--method", "mixup", "--alpha", "0.4", "--mixup-lam", "0.2"], ValueError,
     r"--alpha 0.4 is not used when mixup_lam gives lambda"),
    (["--method", "mixup", "--mixup-lam", "0.2", "--method-opt", "lam=0.3"], ValueError,
     r"method_opts lam=0.3 and mixup_lam 0.2 \(--mixup-lam\) set the same thing"),
])
def test_mixup_lam_flag_errors_are_named(argv, error, match):
    with pytest.raises(error, match=match):
        parse(argv)


def test_an_unset_mixup_lam_leaves_recorded_config_hashes_alone():
    from automix import bench
    from automix.train.config import Config

    assert "mixup_lam" not in bench.config_record(Config())
    assert bench.config_record(Config(mixup_lam=0.2))["mixup_lam"] == 0.2


# ---------------------------------------------------------------- alpha beside lam: refused by the classes themselves
def _classes_taking_alpha_and_lam() -> list[type]:
    """Every mixer and method class that declares both alpha and lam (through ``**kwargs`` up the MRO too)."""
    from automix._options import signature_options
    from automix.methods.registry import _METHODS
    from automix.mixers.registry import mixer_factory

    found = [mixer_factory(n) for n in automix.list_mixers()] + [s.build for s in _METHODS.values()]
    classes = {c for c in found if isinstance(c, type) and {"alpha", "lam"} <= set(signature_options(c))}
    return sorted(classes, key=lambda c: c.__name__)


TAKING_BOTH = _classes_taking_alpha_and_lam()


def test_the_classes_taking_alpha_and_lam_are_all_found():
    names = {c.__name__ for c in TAKING_BOTH}
    assert {"Mixup", "CutMix", "SnapMix", "AutoMix", "SAMix", "AdAutoMix", "ManifoldMix", "AlignMix",
            "AttentiveMixMethod", "PuzzleMix"} <= names, names


@pytest.mark.parametrize("cls", TAKING_BOTH, ids=lambda c: c.__name__)
def test_alpha_beside_lam_is_refused_by_each_class_built_directly(cls):
    """The factories refused alpha with lam; the classes called directly took both and drew lam, silently dropping
    the alpha. Every class refuses it now, also when the alpha given is the class's default value."""
    from automix.methods import Method

    args = (torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 4)),) if issubclass(cls, Method) else ()
    for alpha in (0.5, 1.0, 2.0):
        with pytest.raises(ValueError, match=rf"alpha={alpha} is not used when lam=0.3 gives lambda "
                                             rf"\({cls.__name__}\); give one of them"):
            cls(*args, alpha=alpha, lam=0.3)
    assert "lam" in inspect.signature(cls).parameters or "kwargs" in inspect.signature(cls).parameters, \
        "the check leaves the class's signature its constructor's (help, IDEs)"
    if list(inspect.signature(cls.__init__).parameters)[1:2] == ["alpha"]:
        with pytest.raises(ValueError, match=rf"alpha=0.5 is not used when lam=0.3 .*\({cls.__name__}\)"):
            cls(0.5, lam=0.3)  # alpha given by position


def test_lam_alone_still_builds_every_method_and_mixer_that_wraps_a_mixer():
    model = automix.create_model("preact_resnet18", num_classes=4, width=4)
    for name in ("manifoldmix", "alignmix", "attentivemix", "automix", "samix", "adautomix"):
        method = automix.create_method(name, model, num_classes=4, lam=0.3)
        inner = getattr(method, "mixer", method)
        assert inner.lam == 0.3, name
    # mixup_cutmix with a lam: its alphas only say which mixers are on, whether one or both are.
    assert automix.create_mixer("mixup_cutmix", mixup_alpha=1.0, lam=0.3).lam == 0.3
    assert automix.create_mixer("mixup_cutmix", cutmix_alpha=1.0, lam=0.3).lam == 0.3
    both = automix.create_mixer("mixup_cutmix", mixup_alpha=1.0, cutmix_alpha=1.0, lam=0.3)
    assert [m.lam for m in both.mixers] == [0.3, 0.3]
    assert "alpha" not in repr(both.mixers[0]), "a mixer drawing a given lam does not show an alpha it never uses"
    with pytest.raises(ValueError, match=r"alpha=0.2 is not used when lam=0.3 gives lambda \(mixer 'cutmix'\)"):
        automix.create_mixer("mix_choice", mixers=["mixup", ("cutmix", {"alpha": 0.2})], lam=0.3)
