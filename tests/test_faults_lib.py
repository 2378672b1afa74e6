"""Library faults of issue 13 (items 1-6), each with the inputs the issue reported.

Each test names the row of docs/reliability.md it proves.
"""

from __future__ import annotations

import re

import pytest
import torch
from conftest import MIXER_KWARGS, reads_attention, tiny_vit

import automix


def tiny_model(num_classes: int = 4, seed: int = 0, name: str | None = None) -> torch.nn.Module:
    """A width-4 PreAct-ResNet-18, or for the ViT methods (``name``: TransMix, TokenMix) a 2-block ViT."""
    if name is not None and reads_attention(name):
        return tiny_vit(num_classes)
    torch.manual_seed(seed)
    return automix.create_model("preact_resnet18", num_classes=num_classes, width=4)


def build_method(name: str, model: torch.nn.Module, **kw) -> automix.Method:
    opts = {**MIXER_KWARGS.get(name, {}), **kw}
    if name in ("automix", "samix"):
        opts.setdefault("feature_layer", "layer3")
    return automix.create_method(name, model, num_classes=4, seed=0, **opts)


# ---------------------------------------------------------------- item 6: one input check everywhere
UINT8 = torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8)
LABELS = torch.tensor([0, 1, 2, 3])


def test_automix_uint8_input_gets_the_mixers_type_error():
    """Issue 13.6: AutoMix raised "expected scalar type Byte but found Float" from inside a convolution."""
    method = automix.AutoMix(tiny_model(10), feature_layer="layer3", num_classes=10)
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor for AutoMix.*uint8"):
        method.training_step(UINT8, LABELS)
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor for cutmix.*uint8"):
        automix.create_mixer("cutmix", num_classes=10)(UINT8, LABELS)


@pytest.mark.parametrize("name", automix.list_methods())
def test_every_method_checks_its_batch_like_the_mixers(name):
    method = build_method(name, tiny_model(name=name))
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor .*got dtype torch.uint8"):
        method.training_step(UINT8, LABELS)
    x = torch.rand(4, 3, 32, 32)
    with pytest.raises(ValueError, match=r"y holds class ids outside \[0, num_classes=4\)"):
        method.training_step(x, torch.tensor([0, 1, 2, 4]))
    with pytest.raises(ValueError, match=r"y must have the batch size of x \(4\)"):
        method.training_step(x, torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor"):
        method.training_step(x.numpy(), LABELS)


# ---------------------------------------------------------------- item 1: the loss option in every method
MULTI_HOT = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 1]]).float()


def test_automix_honours_loss_bce_on_multi_hot_targets():
    """Issue 13.1: create_method("automix", ..., loss="bce") gave the CE loss (8.3488) and took any string."""
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    losses = {}
    for loss in ("ce", "bce"):
        method = automix.create_method("automix", tiny_model(), num_classes=4, loss=loss, seed=0)
        losses[loss], logs = method.training_step(x, MULTI_HOT)
        # The clean-head term is the named loss of the online network on the unmixed batch (train-mode BN
        # normalises by the batch, so a second forward gives the same logits).
        with torch.no_grad():
            expected = automix.losses.target_loss(loss, method.model(x), MULTI_HOT)
        torch.testing.assert_close(logs["loss_one"], expected)
    assert not torch.isclose(losses["ce"], losses["bce"])
    with pytest.raises(ValueError, match=r"loss must be one of \['ce', 'bce', 'decouplemix'\], got 'focal'"):
        automix.create_method("automix", tiny_model(), num_classes=4, loss="focal")


def _zero_logits(method: automix.Method) -> None:
    """Every classifier head of the method outputs 0, so any target gives BCE = log 2 per class."""
    fc = "head" if hasattr(method.model, "blocks") else "fc"  # a ViT's classifier is its head
    heads = [method.model.get_submodule(fc)]
    if isinstance(method, (automix.AutoMix, automix.AdAutoMix)):
        heads += [method.model_k.get_submodule(fc), method.head_mix, method.head_mix_k]
    if getattr(method, "token_head", None) is not None:  # SMMix's head on the region tokens
        heads.append(method.token_head)
    with torch.no_grad():
        for head in heads:
            head.weight.zero_()
            head.bias.zero_()


@pytest.mark.parametrize("name", automix.list_methods())
def test_every_method_honours_the_same_loss_options(name):
    with pytest.raises(ValueError, match=r"loss must be one of \['ce', 'bce', 'decouplemix'\]"):
        build_method(name, tiny_model(name=name), loss="focal")
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    log2 = torch.log(torch.tensor(2.0))
    for y in (MULTI_HOT, LABELS):
        method = build_method(name, tiny_model(name=name), loss="bce")
        _zero_logits(method)
        _, logs = method.training_step(x, y)
        # Zero logits give BCE = log 2 whatever the (mixed) target; cross-entropy would give log 4 per unit
        # of target mass.
        learned = {"automix": ["loss_one", "loss_mix", "loss_mb"], "samix": ["loss_one", "loss_mix", "loss_mb"],
                   "adautomix": ["loss_one", "loss_linear", "loss_mix", "loss_gen_ce"],
                   "smmix": ["loss_cls", "loss_fine"]}  # and its consistency term: KL of equal predictions, 0
        terms = learned.get(name, ["loss"])
        for term in terms:
            torch.testing.assert_close(logs[term], log2, msg=f"{name} {term} with y {y.dtype}")
        if name == "smmix":
            torch.testing.assert_close(logs["loss_con"], torch.tensor(0.0))


@pytest.mark.parametrize("name", ["none", "automix"])
def test_label_smoothing_means_the_same_for_class_ids_and_one_hot_rows(name):
    """label_smoothing was dropped for float targets in vanilla training and AutoMix (the mixers apply it)."""
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    one_hot = torch.nn.functional.one_hot(LABELS, 4).float()
    key = "loss_one" if name == "automix" else "loss"
    values = [build_method(name, tiny_model(), label_smoothing=0.2).training_step(x, y)[1][key]
              for y in (LABELS, one_hot)]
    torch.testing.assert_close(values[0], values[1])
    unsmoothed = build_method(name, tiny_model()).training_step(x, one_hot)[1][key]
    assert not torch.isclose(values[1], unsmoothed)


# ---------------------------------------------------------------- item 3: half-precision weights
def _train_one_step(method: automix.Method, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    opt = torch.optim.SGD(method.param_groups(), lr=0.05)
    loss, _ = method.training_step(x, y)
    loss.backward()
    opt.step()
    return loss.detach()


@pytest.mark.parametrize("cls", [automix.AutoMix, automix.SAMix])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_learned_methods_work_in_the_dtype_of_their_model(cls, dtype):
    """Issue 13.3: a bf16 model failed at construction (a float32 dry run), and a method moved to bf16 failed
    inside the Mix Block (float32 features, bf16 weights)."""
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # float32, as loaders give
    y = torch.tensor([0, 1, 2, 3])
    built_on = cls(tiny_model(10).to(dtype), feature_layer="layer3", num_classes=10, seed=0)
    moved = cls(tiny_model(10), feature_layer="layer3", num_classes=10, seed=0).to(dtype)
    for method in (built_on, moved):
        assert {p.dtype for p in method.mix_block.parameters()} == {dtype}
        loss = _train_one_step(method, x, y)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        assert method.last_mix["mask_mb"].dtype == torch.float32, "the Mix Block's attention stays float32"
        assert method.last_mix["x_mb"].dtype == dtype
        # The Mix Block gets a finite gradient in its own dtype. (A fresh block's 16-bit attention can be
        # exactly uniform, and then the fitted mask gives it none: checked on the reference's free mask below.)
        grads = [p.grad for p in method.mix_block.parameters() if p.grad is not None]
        assert grads and all(g.dtype == dtype and torch.isfinite(g).all() for g in grads)
        # A 16-bit EMA encoder cannot follow momentum 0.999: said, not silent.
        with pytest.warns(UserWarning, match=rf"EMA weights in {dtype} cannot follow momentum 0.999"):
            method.after_step()
        assert method.mix_preview(x)["mask"].dtype == torch.float32
    free = cls(tiny_model(10).to(dtype), feature_layer="layer3", num_classes=10, seed=0, reference=True)
    before = [p.detach().clone() for p in free.mix_block.parameters()]
    _train_one_step(free, x, y)
    assert any(not torch.equal(a, p) for a, p in zip(before, free.mix_block.parameters())), \
        "the 16-bit Mix Block is trained"


def test_float32_methods_do_not_warn_about_the_ema(recwarn):
    method = automix.AutoMix(tiny_model(10), feature_layer="layer3", num_classes=10, seed=0)
    _train_one_step(method, torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    method.after_step()
    assert not [w for w in recwarn if "EMA" in str(w.message)]


@pytest.mark.parametrize("name", ["none", "cutmix", "fmix"])
def test_mixer_methods_work_in_the_dtype_of_their_model(name):
    method = build_method(name, tiny_model().to(torch.bfloat16))
    loss = _train_one_step(method, torch.randn(4, 3, 32, 32), LABELS)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


# ---------------------------------------------------------------- item 2: timm's per-sample switch
def _kinds(mixer: automix.BaseMixer, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: 1 = a box (weights 0/1), 0 = a blend (one weight strictly inside (0, 1)), -1 = unmixed.

    Read from the pixels, not from the draw: channel i of sample i of the probe is the weight sample i keeps.
    """
    size = 8
    probe = torch.eye(batch).view(batch, batch, 1, 1).expand(batch, batch, size, size).contiguous()
    out = mixer(probe, torch.rand(batch, 3), gen)
    own = out.x[torch.arange(batch), torch.arange(batch)].flatten(1)  # [B, H * W]
    hard = ((own == 0) | (own == 1)).all(1) & (own == 0).any(1)
    blend = (own == own[:, :1]).all(1) & (own[:, 0] > 0) & (own[:, 0] < 1)
    kinds = torch.where(hard, 1, torch.where(blend, 0, -1))
    assert not (hard & blend).any()
    return kinds, out.index


def test_mixup_cutmix_switch_is_per_sample_in_elem_mode():
    """Issue 13.2: over 200 batches of 16 no batch held both kinds; timm chooses per element."""
    mixer = automix.create_mixer("mixup_cutmix", mixup_alpha=1, cutmix_alpha=1, switch_prob=0.3, mode="elem")
    gen = torch.Generator().manual_seed(0)
    both, cut, classified = 0, 0, 0
    for _ in range(200):
        kinds, _ = _kinds(mixer, 16, gen)
        both += int((kinds == 0).any() and (kinds == 1).any())
        cut += int((kinds == 1).sum())
        classified += int((kinds >= 0).sum())
    # A batch of 16 lacks one kind with probability 0.7**16 + 0.3**16 (0.3%).
    assert both >= 190, f"only {both} of 200 batches mix with both mixup and cutmix"
    assert classified > 0.9 * 200 * 16
    assert 0.26 < cut / classified < 0.34, "CutMix is chosen for switch_prob of the samples"


def test_mixup_cutmix_switch_is_per_pair_in_pair_mode():
    mixer = automix.create_mixer("mixup_cutmix", mixup_alpha=1, cutmix_alpha=1, switch_prob=0.5, mode="pair")
    gen = torch.Generator().manual_seed(1)
    both = 0
    for _ in range(50):
        kinds, index = _kinds(mixer, 16, gen)
        moved = index != torch.arange(16)
        assert torch.equal(kinds[moved], kinds[index][moved]), "both members of a pair get the same mixer"
        both += int((kinds == 0).any() and (kinds == 1).any())
    assert both >= 45


@pytest.mark.parametrize("mixers", [["mixup", "fmix"], ["cutmix", "resizemix"]], ids=["blends", "resizemix"])
def test_mix_choice_per_sample_keeps_each_sample_from_its_own_mixer(mixers):
    """Both ways of applying a per-sample choice (one merged weight map; one output per candidate for
    resizemix, which resamples) give each sample the share of itself that its lam says."""
    batch = 12
    mixer = automix.create_mixer("mix_choice", mixers=mixers, mode="elem")
    probe = torch.eye(batch).view(batch, batch, 1, 1).expand(batch, batch, 16, 16).contiguous()
    params = mixer.sample(probe, torch.Generator().manual_seed(3))
    own = mixer.apply(probe, params)[torch.arange(batch), torch.arange(batch)].mean(dim=(1, 2))
    moved = params.index != torch.arange(batch)
    torch.testing.assert_close(own[moved], params.lam[moved], atol=2e-3, rtol=0)
    assert set(params.extra["choice"].tolist()) == {0, 1}


def test_mix_choice_per_sample_needs_mixers_of_its_mode():
    with pytest.raises(ValueError, match=r"mixers\[1\] has mode 'batch' but the switch has mode 'elem'"):
        automix.create_mixer("mix_choice", mixers=["mixup", automix.create_mixer("cutmix")], mode="elem")


# ---------------------------------------------------------------- item 4: mixers in DataLoader workers
class MixCollate:
    """A collate_fn that mixes in the worker: returns the batch's lambdas and the worker id."""

    def __init__(self, mixer: automix.BaseMixer) -> None:
        self.mixer = mixer

    def __call__(self, samples):
        x, y = torch.utils.data.default_collate(samples)
        out = self.mixer(x, y)
        return out.lam, torch.tensor(torch.utils.data.get_worker_info().id)


def _worker_draws(persistent: bool, epochs: int = 3) -> list[list[tuple[int, torch.Tensor]]]:
    data = torch.utils.data.TensorDataset(torch.rand(32, 3, 8, 8), torch.randint(0, 4, (32,)))
    mixer = automix.create_mixer("cutmix", num_classes=4, mode="elem", generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(data, batch_size=4, num_workers=2, collate_fn=MixCollate(mixer),
                                         persistent_workers=persistent, generator=torch.Generator().manual_seed(7))
    return [[(int(worker), lam) for lam, worker in loader] for _ in range(epochs)]


@pytest.mark.parametrize("persistent", [False, True], ids=["fresh-workers", "persistent-workers"])
def test_seeded_mixer_draws_differ_per_worker_and_epoch_and_repeat_under_the_seed(persistent):
    """Issue 13.4: a mixer with its own seeded generator drew the same lambdas in both workers, every epoch."""
    run = _worker_draws(persistent)
    assert all({w for w, _ in epoch} == {0, 1} for epoch in run)
    # lam ~ Beta(1, 1) corrected to box areas on an 8x8 image: a shared stream repeats whole batches.
    batches = [tuple(lam.tolist()) for epoch in run for _, lam in epoch]
    assert len(set(batches)) == len(batches), "no batch of draws repeats across workers or epochs"
    first = {(e, w): lam for e, epoch in enumerate(run) for w, lam in reversed(epoch)}  # each worker's first
    assert not torch.equal(first[0, 0], first[0, 1]), "the two workers draw differently"
    assert not torch.equal(first[0, 0], first[1, 0]) and not torch.equal(first[1, 0], first[2, 0]), \
        "a worker draws differently each epoch"
    again = _worker_draws(persistent)
    assert all(torch.equal(a, b) and wa == wb for ea, eb in zip(run, again) for (wa, a), (wb, b) in zip(ea, eb)), \
        "two identical seeded runs draw identically"


def test_seeded_mixer_in_the_main_process_is_unchanged():
    x, y = torch.rand(6, 3, 8, 8), torch.randint(0, 4, (6,))
    mixer = automix.create_mixer("cutmix", num_classes=4, mode="elem", generator=torch.Generator().manual_seed(0))
    own = [mixer(x, y).lam for _ in range(3)]
    gen = torch.Generator().manual_seed(0)
    explicit = [automix.create_mixer("cutmix", num_classes=4, mode="elem")(x, y, gen).lam for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(own, explicit))


# ---------------------------------------------------------------- item 5: signals and volumes
SHAPES = {"signal": (6, 6, 40), "volume": (6, 6, 6, 8, 10)}  # channels = batch: the sample-id probe


def _probe(shape: tuple[int, ...]) -> torch.Tensor:
    """Sample i is 1 in channel i, 0 elsewhere: after mixing, channel i of sample i is the weight it keeps."""
    batch, spatial = shape[0], shape[2:]
    return torch.eye(batch).view((batch, batch) + (1,) * len(spatial)).expand(shape).contiguous()


@pytest.mark.parametrize("kind", SHAPES)
@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("name", ["cutmix", "fmix"])
def test_box_and_mask_mixers_take_signals_and_volumes(name, mode, kind):
    """Issue 13.5: cutmix and fmix rejected [B, C, T] signals and [B, C, D, H, W] volumes."""
    shape = SHAPES[kind]
    batch = shape[0]
    mixer = automix.create_mixer(name, num_classes=3, mode=mode)
    out = mixer(_probe(shape), torch.randint(0, 3, (batch,)), torch.Generator().manual_seed(0))
    assert out.x.shape == shape and out.lam.shape == (batch,)
    own = out.x[torch.arange(batch), torch.arange(batch)]  # [B, *spatial]
    moved = out.index != torch.arange(batch)
    # lam is the realised share each sample keeps, not the Beta draw.
    torch.testing.assert_close(own.flatten(1).mean(1)[moved], out.lam[moved])
    assert ((own == 0) | (own == 1)).all(), "hard masks: each element comes from one of the two samples"
    if name == "cutmix":  # the partner's region is one interval / cuboid: it fills its bounding box
        for i in torch.nonzero(moved).flatten().tolist():
            taken = torch.nonzero(own[i] == 0)
            if len(taken):
                sides = taken.max(0).values - taken.min(0).values + 1
                assert int(sides.prod()) == len(taken)
    # An integer map (here: each element holds its sample's id) follows the input through the same draw.
    ids = torch.arange(batch).view((batch,) + (1,) * (len(shape) - 2))
    mixed_seg = mixer.apply_seg(ids.expand((batch,) + shape[2:]), out.params, out.x)
    torch.testing.assert_close((mixed_seg == ids).float(), own)


def test_cutmix_box_sides_follow_lam_in_every_dimension():
    """Each side is floor(side * (1 - lam) ** (1 / d)), so an unclipped box has volume about 1 - lam in any d."""
    for shape in [(2000, 1, 64), (2000, 1, 16, 16), (2000, 1, 8, 12, 16)]:
        spatial = torch.tensor(shape[2:])
        dims = len(spatial)
        params = automix.create_mixer("cutmix", mode="elem", correct_lam=False).sample(
            torch.empty(shape), torch.Generator().manual_seed(0))
        lo, hi = params.box[:, 0::2], params.box[:, 1::2]
        assert params.box.shape == (2000, 2 * dims) and (lo >= 0).all() and (hi <= spatial).all()
        inside = ((lo > 0) & (hi < spatial)).all(1)  # not clipped at the border
        assert inside.sum() > 50
        want = spatial * (1 - params.lam[inside, None].double()) ** (1 / dims)
        sides = (hi - lo)[inside].double()
        assert ((sides <= want + 1e-4) & (sides > want - 1 - 1e-4)).all()


@pytest.mark.parametrize("name", ["gridmix", "smoothmix", "resizemix", "saliencymix"])
@pytest.mark.parametrize("shape", [(4, 3, 16), (4, 3, 4, 8, 8)], ids=["signal", "volume"])
def test_image_only_mixers_reject_signals_and_volumes_clearly(name, shape):
    mixer = automix.create_mixer(name, num_classes=3)
    with pytest.raises(ValueError, match=re.escape(f"x must be a [B, C, H, W] batch for {name}, got shape {shape}")):
        mixer(torch.rand(shape), torch.tensor([0, 1, 2, 0]))


def test_mixup_cutmix_and_methods_on_signals():
    x, y = torch.rand(32, 2, 50), torch.randint(0, 4, (32,))
    out = automix.create_mixer("mixup_cutmix", cutmix_alpha=1.0, mode="elem", num_classes=4)(
        x, y, torch.Generator().manual_seed(0))
    assert out.x.shape == x.shape and set(out.params.extra["choice"].tolist()) == {0, 1}
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv1d(2, 8, 5), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(),
                                torch.nn.Linear(8, 4))
    for name in ("cutmix", "fmix"):
        loss, _ = automix.create_method(name, model, num_classes=4, seed=0).training_step(x, y)
        assert torch.isfinite(loss)
    with pytest.raises(ValueError, match=r"x must be a \[B, C, H, W\] batch for AutoMix, got shape \(32, 2, 50\)"):
        automix.AutoMix(tiny_model(), feature_layer="layer3", num_classes=4).training_step(x, y)
