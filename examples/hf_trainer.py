"""A Hugging Face ``Trainer`` with automix mixing in its ``data_collator``, i.e. in the DataLoader workers.

Usage:
    pip install "transformers[torch]"
    python examples/hf_trainer.py [--mixer cutmix] [--steps 40] [--workers 2]

Synthetic uint8 images as a ``datasets``-style list of rows ``{"pixel_values", "label"}`` (offline; a
``datasets.Dataset`` with a transform that gives CHW uint8 tensors or PIL images works the same). The Hugging Face
image-classification example passes a ``collate_fn`` as ``data_collator``; here it is ``automix.MixCollate``: it
converts uint8 / PIL images to float, normalises, mixes the batch with any input-space mixer and returns soft
targets, which the model's ``forward`` turns into a soft-target cross-entropy. Each worker draws its own mixes,
and a seeded run repeats (``TrainingArguments(seed=...)`` seeds the loader).

The Trainer uses one ``data_collator`` for training and evaluation, so evaluation here runs in a plain loop with
``collate.stack`` (the same conversion, no mixing).
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainingArguments

import automix
from automix.losses import soft_target_cross_entropy

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class Classifier(nn.Module):
    """The CIFAR PreAct-ResNet-18 with the ``forward(pixel_values, labels)`` a ``Trainer`` calls.

    ``labels`` are soft targets float32 [B, C] from ``MixCollate`` (or class ids [B]); returns ``{"loss", "logits"}``.
    """

    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.net = automix.create_model("preact_resnet18", num_classes=num_classes, width=width)
        self.num_classes = num_classes

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.net(pixel_values)
        if labels is None:
            return {"logits": logits}
        if not labels.is_floating_point():
            labels = nn.functional.one_hot(labels, self.num_classes).float()
        return {"loss": soft_target_cross_entropy(logits, labels), "logits": logits}


class TrainerCollator:
    """``MixCollate`` with its ``(x, y)`` named as the model's arguments (a class, so workers can pickle it)."""

    def __init__(self, collate: automix.MixCollate) -> None:
        self.collate = collate

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        x, y = self.collate(rows)
        return {"pixel_values": x, "labels": y}


def rows(n: int, num_classes: int = 10, seed: int = 0) -> list[dict[str, Any]]:
    """Learnable uint8 images [3, 32, 32] (noise plus a per-class brightness) with class-id labels."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=gen)
    noise = torch.randint(0, 128, (n, 3, 32, 32), generator=gen)
    images = (noise + labels.view(-1, 1, 1, 1) * 12).to(torch.uint8)
    return [{"pixel_values": images[i], "label": int(labels[i])} for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixer", default="cutmix", help="any input-space mixer (automix list)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(0)
    collate = automix.MixCollate(automix.create_mixer(args.mixer), num_classes=10, mean=MEAN, std=STD,
                                 keys=("pixel_values", "label"))
    model = Classifier()
    with tempfile.TemporaryDirectory() as out:
        training = TrainingArguments(output_dir=out, max_steps=args.steps, per_device_train_batch_size=32,
                                     learning_rate=0.05, optim="sgd", lr_scheduler_type="cosine", logging_steps=10,
                                     save_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
                                     dataloader_num_workers=args.workers, remove_unused_columns=False)
        trainer = Trainer(model=model, args=training, train_dataset=rows(512), data_collator=TrainerCollator(collate))
        result = trainer.train()
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in torch.utils.data.DataLoader(rows(256, seed=1), batch_size=128, collate_fn=collate.stack):
            correct += int((model(x)["logits"].argmax(1) == y).sum())
            total += y.numel()
    print(f"{args.mixer}: {result.global_step} steps, train loss {result.training_loss:.4f}, "
          f"held-out top-1 {100 * correct / total:.1f}%")


if __name__ == "__main__":
    main()
