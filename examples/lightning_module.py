"""Any automix method, AutoMix included, trained by Lightning through a ``LightningModule``.

Usage:
    pip install lightning
    python examples/lightning_module.py [--method automix] [--epochs 2] [--mixup-off-epoch 0] [--workers 0]
    python examples/lightning_module.py --model vit_tiny --model-opt depth=4 --method transmix --lr 0.01  # a ViT method

Synthetic 3x32x32 images (offline). Lightning has no mixup callback; its maintainers point users to
``training_step`` (Lightning#790), which is where a Method goes. The Method's calls map onto Lightning's hooks:

* ``configure_optimizers``: ``method.param_groups()`` (AutoMix's Mix Block is its own group, so it can get its
  own lr) and ``method.set_total_steps(trainer.estimated_stepping_batches)``, so schedules such as AutoMix's EMA
  momentum span the run;
* ``training_step``: ``method.training_step(x, y)`` gives the loss Lightning back-propagates, and its logs;
* ``optimizer_step``: ``method.after_step()`` (the EMA encoder update) right after Lightning's optimiser step,
  once per step also under gradient accumulation (``on_train_batch_end`` would run once per batch);
* ``validation_step``: ``method.eval_model()``, the network the method reports (the EMA encoder for AutoMix);
* ``on_train_epoch_start``: ``method.set_mixing(...)`` for timm's ``--mixup-off-epoch``.

The method is a submodule, so its whole state (EMA encoder, Mix Block, step counter, random generator) is in
the module's ``state_dict``: Lightning's checkpoints save it and ``trainer.fit(..., ckpt_path=...)`` continues
exactly. An input-space mixer can also mix in the DataLoader workers instead (``automix.MixCollate`` as the
``collate_fn``, with ``--method none`` here).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
import torch.nn.functional as F
import yaml

import automix

try:
    import lightning.pytorch as pl
except ImportError:  # the older package name
    import pytorch_lightning as pl


class MixingModule(pl.LightningModule):
    """A classifier trained with an automix method.

    Args:
        method: a name of ``automix.list_methods()`` (``"automix"``, ``"cutmix"``, ``"none"``, ...).
        num_classes: classes of the data (labels are class ids ``[B]``).
        lr, mix_block_lr: SGD peak lr (cosine to 0 per step); the Mix Block's (``None``: ``lr``).
        width: first-stage channels of the CIFAR PreAct-ResNet-18 (``None`` for a network without widths, a ViT).
        mixup_off_epoch: stop mixing from this epoch on (0: never), as timm's flag.
        seed: seed of the model's init and of the method's generator.
        method_opts: the method's own options (``create_method``).
        model: an ``automix.create_model`` name: ``"preact_resnet18"`` (the default), ``"vit_tiny"`` for the ViT
            methods (``transmix``, ``tokenmix``, ``smmix``, ``mixpro``, ``tla``, or AutoMix on tokens), ...
        model_opts: the model's own options (``{"depth": 4}`` for a ViT).
    """

    def __init__(self, method: str = "automix", num_classes: int = 10, lr: float = 0.1,
                 mix_block_lr: float | None = None, width: int = 16, mixup_off_epoch: int = 0, seed: int = 0,
                 method_opts: dict[str, Any] | None = None, model: str = "preact_resnet18",
                 model_opts: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(seed)
        net = automix.create_model(model, num_classes=num_classes, **({} if width is None else {"width": width}),
                                   **(model_opts or {}))
        self.method = automix.create_method(method, net, num_classes=num_classes, seed=seed, **(method_opts or {}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.method.eval_model()(x)

    def on_train_epoch_start(self) -> None:
        off = self.hparams.mixup_off_epoch
        self.method.set_mixing(not (off and self.current_epoch >= off))
        self.epoch_keys: set[str] = set()  # what this epoch logged: Lightning keeps older epochs' metrics around

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss, logs = self.method.training_step(x, y)
        logged = {f"train_{k}": torch.as_tensor(v, dtype=torch.float32) for k, v in logs.items()}
        self.epoch_keys.update(logged)
        self.log_dict(logged, on_step=False, on_epoch=True, batch_size=x.shape[0])
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.method.after_step()  # EMA encoder and schedules follow the optimiser step just taken

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.method.eval_model()(x)
        self.log("val_top1", 100.0 * (logits.argmax(1) == y).float().mean(), batch_size=x.shape[0])
        self.log("val_loss", F.cross_entropy(logits.float(), y), batch_size=x.shape[0])

    def configure_optimizers(self) -> dict[str, Any]:
        total = int(self.trainer.estimated_stepping_batches)
        self.method.set_total_steps(total)
        groups = []
        for group in self.method.param_groups():
            group = dict(group)
            if group["name"] == "mix_block" and self.hparams.mix_block_lr is not None:
                group["lr"] = self.hparams.mix_block_lr
            groups.append(group)
        optimizer = torch.optim.SGD(groups, lr=self.hparams.lr, momentum=0.9, weight_decay=5e-4)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def synthetic(n: int, num_classes: int = 10, seed: int = 0) -> torch.utils.data.TensorDataset:
    """Learnable images: noise plus a per-class offset, float32 [n, 3, 32, 32], labels long [n]."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (n,), generator=gen)
    x = torch.randn(n, 3, 32, 32, generator=gen) * 0.5 + y.view(-1, 1, 1, 1) * 0.1
    return torch.utils.data.TensorDataset(x, y)


def trainer(epochs: int, **kwargs: Any) -> pl.Trainer:
    """A quiet CPU trainer (no logger folders, no checkpoint callback: save with ``trainer.save_checkpoint``)."""
    options = {"accelerator": "cpu", "devices": 1, "max_epochs": epochs, "logger": False,
               "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
               "num_sanity_val_steps": 0, **kwargs}
    return pl.Trainer(**options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="automix")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--mixup-off-epoch", type=int, default=0)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--model", default="preact_resnet18", help="automix.create_model name (vit_tiny for a ViT)")
    parser.add_argument("--model-opt", action="append", default=[], metavar="KEY=VALUE",
                        help="a model option, e.g. depth=4 (repeatable)")
    parser.add_argument("--lr", type=float, default=0.1, help="peak SGD lr")
    args = parser.parse_args()
    model_opts = {}
    for item in args.model_opt:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--model-opt {item!r}: expected KEY=VALUE, e.g. depth=4")
        model_opts[key] = yaml.safe_load(value)
    train = torch.utils.data.DataLoader(synthetic(args.images), batch_size=32, shuffle=True, drop_last=True,
                                        num_workers=args.workers, generator=torch.Generator().manual_seed(0))
    val = torch.utils.data.DataLoader(synthetic(128, seed=1), batch_size=64, num_workers=args.workers)
    module = MixingModule(args.method, lr=args.lr, width=8 if args.model == "preact_resnet18" else None,
                          mixup_off_epoch=args.mixup_off_epoch, model=args.model, model_opts=model_opts)
    fit = trainer(args.epochs)
    fit.fit(module, train, val)
    # The last epoch's own numbers: a clean epoch (--mixup-off-epoch) logs no mixing terms, and the ones Lightning
    # still holds from the mixed epochs before it are not this epoch's.
    metrics = {k: round(float(v), 4) for k, v in fit.callback_metrics.items()
               if k in module.epoch_keys or not k.startswith("train_")}
    print(f"steps {int(module.method.step)}  " + "  ".join(f"{k} {v}" for k, v in sorted(metrics.items())))


if __name__ == "__main__":
    main()
