"""The shipped examples run end to end (short settings)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_regression_example():
    out = run("regression_mixup.py", "--steps", "30")
    assert "held-out MSE" in out
    rows = {line.rsplit(None, 1)[0].strip(): float(line.rsplit(None, 1)[1]) for line in out.splitlines()[1:]}
    # The write-up's settings (a fixed lam, lam from eps) beside Beta(alpha, alpha) and no mixing.
    assert list(rows) == ["no mixing", "mixup(alpha=0.4)", "mixup(lam=0.2)", "mixup(lam from eps)"], out
    assert all(v > 0 for v in rows.values()) and len(set(rows.values())) == 4, out


def test_classifier_example():
    out = run("classifier_loop.py", "--steps", "3")
    assert "step   2" in out


# ---------------------------------------------------------------- Lightning and Hugging Face (optional installs)
def load_example(script: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{script[:-3]}", ROOT / "examples" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lightning_or_skip() -> types.ModuleType:
    for name in ("lightning.pytorch", "pytorch_lightning"):
        if importlib.util.find_spec(name.split(".")[0]) is not None:
            return importlib.import_module(name)
    pytest.skip("Lightning is not installed (pip install lightning, or the project's test extra)")


def test_lightning_module_trains_automix_and_restores_it_exactly(tmp_path):
    """after_step runs once per optimiser step (the EMA encoder moves), validation uses the EMA encoder, and a run
    checkpointed by Lightning after epoch 0 and resumed ends where the uninterrupted run does, bit for bit."""
    pl = lightning_or_skip()
    ex = load_example("lightning_module.py")
    data, val = ex.synthetic(32), ex.synthetic(16, seed=1)

    def loader():  # a fixed order, so the resumed epoch sees the batches the uninterrupted one saw
        return torch.utils.data.DataLoader(data, batch_size=8)

    def module(seed=0):
        return ex.MixingModule("automix", width=4, seed=seed, mix_block_lr=0.05)

    straight = module()
    ema_before = {k: v.clone() for k, v in straight.method.model_k.state_dict().items()}
    fit = ex.trainer(2)
    fit.fit(straight, loader(), torch.utils.data.DataLoader(val, batch_size=16))
    assert int(straight.method.step) == fit.global_step == 8, "after_step once per optimiser step"
    assert straight.method.total_steps == 8
    moved = [k for k, v in straight.method.model_k.state_dict().items() if not torch.equal(v, ema_before[k])]
    assert any(k.endswith("weight") for k in moved), "the EMA encoder followed the model"
    assert "val_top1" in fit.callback_metrics
    x = val.tensors[0][:4]
    assert torch.equal(straight(x), straight.method.model_k.eval()(x)), "the module evaluates the EMA encoder"
    assert [g["lr"] for g in fit.optimizers[0].param_groups] == [0.0, 0.0]  # the cosine ran to its end

    class StopAfterFirstEpoch(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = True

    first = module()
    fit = ex.trainer(2, callbacks=[StopAfterFirstEpoch()])
    fit.fit(first, loader())
    assert int(first.method.step) == 4
    fit.save_checkpoint(tmp_path / "epoch0.ckpt")
    resumed = module(seed=1)  # other initial weights and generator: everything must come from the checkpoint
    ex.trainer(2).fit(resumed, loader(), ckpt_path=str(tmp_path / "epoch0.ckpt"))
    a, b = straight.method.state_dict(), resumed.method.state_dict()
    assert a.keys() == b.keys()
    differ = [k for k in a if isinstance(a[k], torch.Tensor) and not torch.equal(a[k], b[k])]
    assert not differ, differ[:5]
    assert torch.equal(a["_extra_state"]["generator"], b["_extra_state"]["generator"])
    assert a["_extra_state"]["total_steps"] == b["_extra_state"]["total_steps"] == 8


def test_lightning_example_prints_the_clean_epochs_own_numbers():
    lightning_or_skip()
    out = run("lightning_module.py", "--epochs", "2", "--mixup-off-epoch", "1", "--images", "64")
    last = out.strip().splitlines()[-1]
    assert "train_loss " in last and "val_top1 " in last, last
    # the clean epoch logs no mixing terms; Lightning still held epoch 0's and the example printed them
    assert "train_loss_mix" not in last and "train_mask" not in last, last


@pytest.mark.parametrize("method", ["transmix", "tla"])
def test_lightning_example_trains_a_vit_method(method):
    """The example's --model takes a ViT, so the attention methods train under Lightning too (they refuse the
    default ResNet, naming what they need)."""
    lightning_or_skip()
    out = run("lightning_module.py", "--model", "vit_tiny", "--model-opt", "depth=2", "--method", method,
              "--epochs", "1", "--images", "64", "--lr", "0.01")
    last = out.strip().splitlines()[-1]
    assert last.startswith("steps 2 ") and "train_loss " in last and "val_top1 " in last, last


def test_hugging_face_trainer_mixes_in_its_data_collator():
    """The Trainer runs its steps on batches MixCollate mixed in two DataLoader workers."""
    if any(importlib.util.find_spec(name) is None for name in ("transformers", "accelerate")):
        pytest.skip('transformers with accelerate is not installed (pip install "transformers[torch]")')
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "hf_trainer.py"), "--steps", "3", "--workers", "2"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^cutmix: 3 steps, train loss \d+\.\d+, held-out top-1 \d+\.\d%$", proc.stdout, re.M), proc.stdout
