"""``automix.MixCollate``: mixing in DataLoader workers (issue 17, item 1)."""

from __future__ import annotations

import pickle

import pytest
import torch
from conftest import MIXER_KWARGS, STATIC_MIXERS

import automix
from automix.mixers.registry import mixer_factory

PIL = pytest.importorskip("PIL.Image")

MODEL_AWARE = [n for n in automix.list_mixers() if getattr(mixer_factory(n), "needs", None) is not None]


def uint8_samples(n: int = 6, size: int = 16, classes: int = 4, seed: int = 0) -> list[tuple[torch.Tensor, int]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen), i % classes) for i in range(n)]


@pytest.mark.parametrize("name", STATIC_MIXERS)
def test_every_input_space_mixer_mixes_in_a_collate(name):
    """The collate returns exactly what the mixer gives on the stacked float batch, for every static mixer."""
    samples = uint8_samples()
    mixer = automix.create_mixer(name, **MIXER_KWARGS.get(name, {}))
    collate = automix.MixCollate(mixer, num_classes=4)
    assert mixer.num_classes is None, "the caller's mixer is left as it was"
    torch.manual_seed(5)
    x, y = collate(samples)
    images = torch.stack([s[0] for s in samples]).float() / 255
    labels = torch.tensor([s[1] for s in samples])
    torch.manual_seed(5)
    expected = automix.create_mixer(name, num_classes=4, **MIXER_KWARGS.get(name, {}))(images, labels)
    assert x.dtype == torch.float32 and y.dtype == torch.float32 and y.shape == (6, 4)
    torch.testing.assert_close(x, expected.x)
    torch.testing.assert_close(y, expected.y)
    assert not torch.equal(x, images), f"{name} mixed nothing"


@pytest.mark.parametrize("name", MODEL_AWARE)
def test_model_aware_mixers_are_refused_by_name(name):
    with pytest.raises(ValueError, match=rf"mixer '{name}' reads the model's '\w+' context.*create_method\('{name}'"):
        automix.MixCollate(automix.create_mixer(name), num_classes=4)


def test_guidedmix_spectral_needs_no_model_and_is_accepted():
    x, y = automix.MixCollate(automix.create_mixer("guidedmix", guide="spectral"), num_classes=4)(uint8_samples())
    assert x.shape == (6, 3, 16, 16) and torch.allclose(y.sum(1), torch.ones(6))


def test_pil_images_match_the_uint8_tensors():
    samples = uint8_samples(4)
    pil = [(PIL.fromarray(img.permute(1, 2, 0).numpy()), label) for img, label in samples]
    collate = automix.MixCollate("mixup", num_classes=4)
    a, b = collate.stack(samples), collate.stack(pil)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    grey = collate.stack([(p.convert("L"), lab) for p, lab in pil])[0]
    rgba = collate.stack([(p.convert("RGBA"), lab) for p, lab in pil])[0]
    assert grey.shape == (4, 1, 16, 16) and torch.equal(rgba, a[0]), "L keeps one channel, RGBA drops alpha"
    with pytest.raises(TypeError, match=r"samples\[0\] is a PIL image of mode 'I;16'"):
        collate.stack([(PIL.new("I;16", (4, 4)), 0)])


def test_float_images_soft_labels_mappings_and_normalisation():
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(4, 3, 8, 8, generator=gen)
    soft = torch.rand(4, 5, generator=gen).softmax(1)
    rows = [{"pixel_values": images[i], "label": soft[i]} for i in range(4)]
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    collate = automix.MixCollate("cutmix", keys=("pixel_values", "label"), mean=mean, std=std)
    x, y = collate.stack(rows)
    torch.testing.assert_close(x, (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    assert torch.equal(y, soft)
    torch.manual_seed(0)
    x_mix, y_mix = collate(rows)
    assert y_mix.shape == (4, 5) and torch.allclose(y_mix.sum(1), torch.ones(4))
    assert automix.MixCollate("mixup", dtype=torch.float64).stack(rows[:1] and [(images[0], 1)])[0].dtype == \
        torch.float64


@pytest.mark.parametrize("samples, error, match", [
    ([], ValueError, "non-empty list"),
    ([(torch.zeros(3, 8, 8, dtype=torch.uint8), 0), (torch.zeros(3, 9, 8, dtype=torch.uint8), 1)], ValueError,
     r"samples\[1\] has image shape \(3, 9, 8\) but samples\[0\] has \(3, 8, 8\)"),
    ([(torch.zeros(3, 8, 8, dtype=torch.int16), 0)], TypeError, r"samples\[0\] image must be uint8.*int16"),
    ([("not an image", 0)], TypeError, r"samples\[0\] image must be a tensor.*str"),
    ([torch.zeros(3, 8, 8)], TypeError, r"samples\[0\] must be an \(image, label\) pair"),
    ([{"image": torch.zeros(3, 8, 8), "label": 0}], TypeError, "give keys="),
])
def test_bad_samples_are_named(samples, error, match):
    with pytest.raises(error, match=match):
        automix.MixCollate("mixup", num_classes=4)(samples)


# ---------------------------------------------------------------- inputs a tester found unchecked
def u8(*shape: int) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(sum(shape)))


@pytest.mark.parametrize("labels, error, match", [
    (["cat", "dog"], TypeError, r"samples\[0\] label must be a class index \(an int or a 0-dim integer tensor\) or a "
                                r"float target \(a float or a float tensor\), got str 'cat'; map class names to "
                                r"indices in the dataset"),
    ([True, False], TypeError, r"samples\[0\] label must be a class index .* got bool True"),
    ([torch.tensor([1, 0, 1]), torch.tensor([0, 1, 1])], TypeError,
     r"samples\[0\] label .* got tensor of dtype torch.int64 and shape \(3,\)"),
    ([0, 1.0], ValueError, r"samples\[1\] has a float target label of shape \(\) \(float 1.0\) but samples\[0\] "
                           r"a class index of shape \(\) \(int 0\); give every label as class indices"),
    ([2, torch.tensor([0.0, 1.0, 0.0, 0.0])], ValueError,
     r"samples\[1\] has a float target label of shape \(4,\) .* but samples\[0\] a class index"),
    ([torch.rand(4), torch.rand(5)], ValueError,
     r"samples\[1\] has a float target label of shape \(5,\) .* but samples\[0\] a float target of shape \(4,\)"),
])
def test_labels_of_another_kind_are_named(labels, error, match):
    """String labels raised AttributeError ('list' object has no attribute 'is_floating_point'); an int beside a
    float was collated to float targets, so class ids were mixed as regression values; an int beside a one-hot
    tensor raised "only one element tensors can be converted to Python scalars"."""
    with pytest.raises(error, match=match):
        automix.MixCollate("mixup", num_classes=4).stack([(u8(3, 8, 8), label) for label in labels])


def test_numpy_and_tensor_class_ids_and_float_targets_are_collated():
    np = pytest.importorskip("numpy")
    collate = automix.MixCollate("mixup", num_classes=4)
    for labels in ([1, 3], [np.int64(1), np.int64(3)], [torch.tensor(1), torch.tensor(3)]):
        y = collate.stack([(u8(3, 8, 8), label) for label in labels])[1]
        assert y.dtype == torch.long and y.tolist() == [1, 3]
    regression = automix.MixCollate("mixup")  # no num_classes: float scalars are regression values
    y = regression.stack([(u8(3, 8, 8), 0.5), (u8(3, 8, 8), np.float32(2.0))])[1]
    assert y.dtype == torch.float32 and y.tolist() == [0.5, 2.0]


@pytest.mark.parametrize("labels, match", [
    ([1.0, 3.0], r"samples\[0\] label is a float scalar \(float 1.0\) but num_classes is 4: give class indices as "
                 r"ints .* or one-hot / soft / multi-label targets of shape \(4,\)"),
    ([torch.tensor(2.0), torch.tensor(0.0)], r"label is a float scalar .* but num_classes is 4"),
    ([torch.eye(5)[1], torch.eye(5)[3]], r"samples\[0\] label is a float target of shape \(5,\) \(tensor of dtype "
                                         r"torch.float32 and shape \(5,\)\) but num_classes is 4"),
])
def test_float_labels_that_do_not_fit_num_classes_are_refused(labels, match):
    """Float class ids and one-hot targets of another width passed silently (mixed as numbers / against other
    classes)."""
    with pytest.raises(ValueError, match=match):
        automix.MixCollate("mixup", num_classes=4)([(u8(3, 8, 8), label) for label in labels])
    soft = automix.MixCollate("mixup", num_classes=5).stack([(u8(3, 8, 8), torch.eye(5)[i]) for i in (1, 3)])[1]
    assert soft.shape == (2, 5)


def test_images_without_a_channel_dim_or_channels_last():
    """[H, W] tensors were stacked to [B, H, W], which a mixer takes as H channels of a 1-D signal (CutMix then cut
    stripes across W); [H, W, C] tensors were mixed as C = H channels of an H x C image."""
    grey = [(u8(8, 8), 0), (u8(8, 8), 1)]
    collate = automix.MixCollate("cutmix", num_classes=4)
    x = collate.stack(grey)[0]
    assert x.shape == (2, 1, 8, 8)
    assert torch.equal(x, collate.stack([(img.unsqueeze(0), label) for img, label in grey])[0])
    assert collate(grey)[0].shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"samples\[0\] image has shape \(8, 8, 3\), which looks channels-last "
                                         r"\[H, W, C\]; MixCollate takes \[C, H, W\]: permute\(2, 0, 1\)"):
        collate.stack([(u8(8, 8, 3), 0)])
    with pytest.raises(ValueError, match=r"samples\[0\] image has shape \(1, 3, 8, 8\); MixCollate takes "
                                         r"\[C, H, W\] or \[H, W\] \(spatial_dims=2\)"):
        collate.stack([(u8(1, 3, 8, 8), 0)])
    # Signals and volumes say so: [C, T] or [T] with spatial_dims=1, [C, D, H, W] with spatial_dims=3.
    signals = automix.MixCollate("cutmix", num_classes=4, spatial_dims=1)
    assert signals.stack([(torch.rand(2, 16), 0), (torch.rand(2, 16), 1)])[0].shape == (2, 2, 16)
    assert signals.stack([(torch.rand(16), 0)])[0].shape == (1, 1, 16)
    assert signals([(torch.rand(16), 0), (torch.rand(16), 1)])[0].shape == (2, 1, 16)
    volumes = automix.MixCollate("cutmix", num_classes=4, spatial_dims=3)
    assert volumes.stack([(torch.rand(1, 4, 8, 8), 0)])[0].shape == (1, 1, 4, 8, 8)
    with pytest.raises(ValueError, match=r"spatial_dims 1 is not one mixer 'gridmix' takes \(\[2\]\)"):
        automix.MixCollate("gridmix", num_classes=4, spatial_dims=1)
    with pytest.raises(ValueError, match="spatial_dims must be 1 .*, 2 .* or 3 .*, got 4"):
        automix.MixCollate("mixup", spatial_dims=4)


def test_one_number_normalises_every_channel():
    """``mean=0.5`` raised "'float' object is not iterable"; one number now applies to every channel."""
    samples = [(u8(3, 8, 8), 0), (u8(3, 8, 8), 1)]
    one = automix.MixCollate("mixup", num_classes=4, mean=0.5, std=0.25).stack(samples)[0]
    per = automix.MixCollate("mixup", num_classes=4, mean=(0.5,) * 3, std=(0.25,) * 3).stack(samples)[0]
    assert torch.equal(one, per)
    mixed = automix.MixCollate("mixup", num_classes=4, mean=(0.1, 0.2, 0.3), std=0.5).stack(samples)[0]
    assert torch.equal(mixed, automix.MixCollate("mixup", num_classes=4, mean=(0.1, 0.2, 0.3),
                                                 std=(0.5,) * 3).stack(samples)[0])
    with pytest.raises(TypeError, match=r"mean must be a number or one number per channel, got '0.5'"):
        automix.MixCollate("mixup", mean="0.5", std=0.25)
    with pytest.raises(TypeError, match=r"std must be a number or one number per channel, got \[0.2, None\]"):
        automix.MixCollate("mixup", mean=0.5, std=[0.2, None])


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="num_classes 5 differs from the mixer's num_classes 4"):
        automix.MixCollate(automix.create_mixer("mixup", num_classes=4), num_classes=5)
    with pytest.raises(TypeError, match="mixer must be a mixer"):
        automix.MixCollate(automix.create_method("mixup", torch.nn.Linear(2, 2), num_classes=2))
    with pytest.raises(ValueError, match="mean and std go together"):
        automix.MixCollate("mixup", mean=(0.5,))
    with pytest.raises(ValueError, match="one non-zero std per channel"):
        automix.MixCollate("mixup", mean=(0.5, 0.5), std=(0.2,))
    with pytest.raises(ValueError, match="dtype must be a floating"):
        automix.MixCollate("mixup", dtype=torch.int64)
    with pytest.raises(TypeError, match="keys must be"):
        automix.MixCollate("mixup", keys="image")
    with pytest.raises(ValueError, match="num_classes is required"):
        automix.MixCollate("mixup")(uint8_samples(2))


def test_a_collate_pickles_for_spawned_workers_and_draws_the_same():
    mixer = automix.create_mixer("cutmix", mode="elem", generator=torch.Generator().manual_seed(3))
    collate = automix.MixCollate(mixer, num_classes=4, mean=(0.5,) * 3, std=(0.25,) * 3)
    again = pickle.loads(pickle.dumps(collate))
    samples = uint8_samples()
    for _ in range(2):
        a, b = collate(samples), again(samples)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ---------------------------------------------------------------- workers: per worker, per epoch, reproducible
class Repeated(torch.utils.data.Dataset):
    """Every batch of 8 holds the same 8 samples of 8 classes, so two batches differ only by their mixing draws
    (8 samples: a draw that pairs every sample with itself, and so mixes nothing, has odds 1 in 40320)."""

    def __init__(self, n: int = 64) -> None:
        self.base = uint8_samples(8, size=8, classes=8)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.base[i % 8]


def loader_batches(persistent: bool, loader_seed: int, mixer_seed: int | None, epochs: int = 3):
    gen = None if mixer_seed is None else torch.Generator().manual_seed(mixer_seed)
    collate = automix.MixCollate(automix.create_mixer("mixup", mode="elem", generator=gen), num_classes=8)
    loader = torch.utils.data.DataLoader(Repeated(), batch_size=8, num_workers=2, collate_fn=collate,
                                         persistent_workers=persistent,
                                         generator=torch.Generator().manual_seed(loader_seed))
    return [[(x, y) for x, y in loader] for _ in range(epochs)]


@pytest.mark.parametrize("mixer_seed", [None, 0], ids=["global-generator", "own-generator"])
@pytest.mark.parametrize("persistent", [False, True], ids=["fresh-workers", "persistent-workers"])
def test_workers_draw_differently_per_worker_and_epoch_and_repeat_under_a_seed(persistent, mixer_seed):
    run = loader_batches(persistent, 7, mixer_seed)
    assert [len(epoch) for epoch in run] == [8, 8, 8]
    targets = [tuple(y.flatten().tolist()) for epoch in run for _, y in epoch]
    assert len(set(targets)) == len(targets), "no batch's draws repeat, across workers (even / odd batches) " \
                                              "or epochs"
    # Batch 0 comes from worker 0 and batch 1 from worker 1 (in-order loading): their draws differ.
    assert not torch.equal(run[0][0][1], run[0][1][1])
    assert not torch.equal(run[0][0][1], run[1][0][1]) and not torch.equal(run[1][0][1], run[2][0][1])
    again = loader_batches(persistent, 7, mixer_seed)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
               for ea, eb in zip(run, again) for a, b in zip(ea, eb)), "two identical seeded loaders differ"
    other = loader_batches(persistent, 8, mixer_seed, epochs=1)
    assert not torch.equal(other[0][0][1], run[0][0][1]), "the loader's seed sets the draws"
    if mixer_seed is not None:
        own = loader_batches(persistent, 7, mixer_seed + 1, epochs=1)
        assert not torch.equal(own[0][0][1], run[0][0][1]), "the mixer's own seed sets the draws too"


# ---------------------------------------------------------------- spawn / forkserver workers
def spawn_or_fork_batches(context: str, mixer_seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    collate = automix.MixCollate(automix.create_mixer("mixup", mode="elem",
                                                      generator=torch.Generator().manual_seed(mixer_seed)),
                                 num_classes=8)
    loader = torch.utils.data.DataLoader(Repeated(32), batch_size=8, num_workers=2, collate_fn=collate,
                                         multiprocessing_context=context, timeout=120,
                                         generator=torch.Generator().manual_seed(7))
    return list(loader)


@pytest.mark.skipif("spawn" not in torch.multiprocessing.get_all_start_methods(), reason="no spawn start method")
def test_a_mixer_with_its_own_generator_works_in_spawned_workers_and_draws_as_forked_ones():
    """A mixer built with generator= killed spawned (and forkserver) workers with "unable to resize file": the
    generator's pickled state tensor went through shared memory. The mixer now pickles its generator as bytes; each
    worker re-seeds it from the mixer's seed, its id and its per-epoch seed, so spawned workers draw exactly what
    forked ones do. (Spawning two workers imports torch twice: about 5-10 s.)"""
    spawned = spawn_or_fork_batches("spawn", 3)
    assert len(spawned) == 4
    if "fork" in torch.multiprocessing.get_all_start_methods():
        forked = spawn_or_fork_batches("fork", 3)
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(spawned, forked))
    assert not torch.equal(spawned[0][1], spawned[1][1]), "worker 0 and worker 1 draw differently"
    assert not torch.equal(spawned[0][1], spawned[2][1]), "a worker's stream goes on from batch to batch"


def test_a_pickled_mixer_rebuilds_its_generator_and_a_copy_shares_it():
    import copy

    gen = torch.Generator().manual_seed(11)
    torch.rand(3, generator=gen)
    mixer = automix.create_mixer("cutmix", generator=gen)
    again = pickle.loads(pickle.dumps(mixer))
    assert isinstance(again.generator, torch.Generator) and again.generator is not gen
    assert again.generator.initial_seed() == 11 and torch.equal(again.generator.get_state(), gen.get_state())
    assert copy.copy(mixer).generator is gen, "a shallow copy (MixCollate's) draws from the caller's stream"
    assert copy.deepcopy(mixer).generator is not gen
    assert pickle.loads(pickle.dumps(automix.create_mixer("cutmix"))).generator is None


def test_hints_name_the_actual_problem():
    collate = automix.MixCollate(automix.create_mixer("mixup"), num_classes=3)
    grey, colour = PIL.new("L", (8, 8)), PIL.new("RGB", (8, 8))
    with pytest.raises(ValueError, match=r"samples\[1\] has 1 channel\(s\).*samples\[0\] has 3.*convert\('RGB'\)"):
        collate.stack([(colour, 0), (grey, 1)])
    with pytest.raises(ValueError, match=r"resize or crop"):  # a size difference keeps its own advice
        collate.stack([(colour, 0), (PIL.new("RGB", (6, 8)), 1)])
    np = pytest.importorskip("numpy")
    with pytest.raises(TypeError, match=r"torch.from_numpy\(a\) for a \[C, H, W\] array"):
        collate.stack([(np.zeros((3, 8, 8), dtype=np.uint8), 0)])
    with pytest.raises(TypeError, match=r"permute\(2, 0, 1\) for an \[H, W, C\] array"):
        collate.stack([(np.zeros((8, 8, 3), dtype=np.uint8), 0)])
    with pytest.raises(ValueError, match=r"samples\[2\] label is class 5, outside \[0, num_classes=3\)"):
        collate([(torch.rand(3, 8, 8), 0), (torch.rand(3, 8, 8), 1), (torch.rand(3, 8, 8), 5)])
