"""Two CPU processes (gloo): AutoMix under DDP keeps the online and EMA networks identical on every rank."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import automix


def _worker(rank: int, world: int, init_file: str, out_dir: str, cls_name: str) -> None:
    from automix.train.distributed import cleanup
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        _train(rank, out_dir, cls_name)
    finally:
        cleanup()  # the DDP wrapper, gone with _train's frame, is collected before the group goes


def _train(rank: int, out_dir: str, cls_name: str) -> None:
    torch.manual_seed(0)  # same initial weights on every rank
    model = automix.create_model("preact_resnet18", num_classes=4, width=8)
    cls = getattr(automix, cls_name)
    method = cls(model, feature_layer="layer3", num_classes=4, total_steps=10, seed=100 + rank)
    ddp = torch.nn.parallel.DistributedDataParallel(method)
    opt = torch.optim.SGD(method.param_groups(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(rank)  # different data on each rank
    for _ in range(3):
        x = torch.randn(6, 3, 32, 32, generator=gen)
        y = torch.randint(0, 4, (6,), generator=gen)
        loss, _ = ddp(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        method.after_step()
    before = {k: v.clone() for k, v in method.state_dict().items() if isinstance(v, torch.Tensor)}
    method.sync_buffers()
    state = {k: v for k, v in method.state_dict().items() if isinstance(v, torch.Tensor)}
    torch.save({"before": before, "after": state}, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.parametrize("cls_name", ["AutoMix", "SAMix"])
def test_two_ranks_stay_identical(tmp_path, cls_name):
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path), cls_name), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    # Before syncing, only BN statistics (updated by each rank's own forwards) may differ.
    differ = [k for k in a["before"] if not torch.equal(a["before"][k], b["before"][k])]
    stats = ("running_mean", "running_var", "num_batches_tracked")
    assert all(k.endswith(stats) for k in differ), [k for k in differ if not k.endswith(stats)]
    a, b = a["after"], b["after"]
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    # The EMA encoder, the online network and the Mix Block: parameters and BN buffers alike.
    assert not differ, differ
    assert any(k.startswith("model_k.") for k in a) and any(k.startswith("mix_block.") for k in a)


def test_cleanup_collects_a_ddp_wrapper_caught_in_a_cycle_before_leaving_the_group(tmp_path):
    """A DDP wrapper that outlived its process group (a reference cycle, collected only at interpreter exit)
    aborted gloo ranks after their work ("terminate called without an active exception"): ``cleanup`` collects
    it first, while the group still exists."""
    import gc
    import weakref

    from automix.train import distributed as dist_util
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    seen = []
    real_destroy = dist.destroy_process_group
    try:
        class Holder:
            pass
        holder = Holder()
        holder.me = holder  # the cycle
        holder.ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 2))
        holder.ddp(torch.randn(4, 3)).sum().backward()
        alive = weakref.ref(holder.ddp)
        del holder
        gc.disable()  # so that only cleanup() can collect the cycle
        dist.destroy_process_group = lambda *a, **k: (seen.append(alive() is None), real_destroy(*a, **k))
        dist_util.cleanup()
    finally:
        gc.enable()
        dist.destroy_process_group = real_destroy
        if dist.is_initialized():
            real_destroy()
    assert seen == [True]
    assert not dist.is_initialized()
