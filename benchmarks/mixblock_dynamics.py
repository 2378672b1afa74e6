"""What drives AutoMix's Mix Block during a run: per-step mask statistics, the Mix Block's parameters and
gradients, and the EMA encoder's loss on fixed masks (whole images vs mixup vs the Mix Block's masks).

Trains a run exactly as ``automix train`` would (same Run object), and after every step records:
the partner-mask mean and spatial std, the share of whole-image masks, the value bias and the mean /
spread of the pre-sigmoid logits, the gradient reaching the Mix Block from the Mix Block loss and from
the mask loss, and every ``probe`` steps the EMA encoder's mixed CE ``L_mb`` on the same batch and lam
with constant masks (0 = the sample alone, 1 - lam = mixup, 1 = the partner alone) beside its masks.

    PYTHONPATH=src python benchmarks/mixblock_dynamics.py --config configs/quickstart.yaml --steps 120 \
        --out benchmarks/results/mixblock_dynamics/quickstart.csv [--set method_opts.mask_fit=false ...]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from automix.losses import soft_target_cross_entropy  # noqa: E402
from automix.methods.mixblock import whole_image_share  # noqa: E402
from automix.train.config import from_dict, load_yaml  # noqa: E402
from automix.train.engine import Run  # noqa: E402


def parse_set(items: list[str]) -> dict:
    import yaml
    out: dict = {}
    for item in items:
        key, _, value = item.partition("=")
        parts = key.split(".")
        d = out
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = yaml.safe_load(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--probe", type=int, default=5)
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. method_opts.momentum=0.99")
    args = ap.parse_args()
    values = load_yaml(args.config)
    extra = parse_set(args.set)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(values.get(k), dict):
            values[k] = {**values[k], **v}
        else:
            values[k] = v
    values.update(output=str(Path(args.out).with_suffix("")) + "_run", save_images=False, progress=False)
    run = Run(from_dict(values))
    method, block = run.method, run.method.mix_block
    value_conv = block.value if isinstance(block.value, torch.nn.Conv2d) else block.value.conv2
    logits_seen: list[torch.Tensor] = []
    hook = block.register_forward_hook(
        lambda m, i, o: logits_seen.append(torch.logit(o.detach().clamp(1e-7, 1 - 1e-7))))
    qk: list[torch.Tensor] = []
    qhook = block.query.register_forward_hook(lambda m, i, o: qk.append(o.detach()))
    rows = []
    step = 0
    method.train()
    while step < args.steps:
        for x, y in run.batches.epoch(run.epoch, 0):
            logits_seen.clear()
            qk.clear()
            terms = method.compute_losses(x, y)
            grads = {}
            for name in ("mb", "mask"):
                g = torch.autograd.grad(terms[name], [value_conv.bias, value_conv.weight], retain_graph=True,
                                        allow_unused=True)
                grads[name] = [0.0 if t is None else float(t.norm()) for t in g]
            lm = method.last_mix
            mask = lm["mask_mb"]
            s = logits_seen[0]
            if block.qk_concat or len(qk) < 2:
                attn_spread = float("nan")
            else:  # AutoMix's shared query conv ran on z_a then z_b
                q, k = qk[0].flatten(2), qk[1].flatten(2)
                att = torch.einsum("ncq,nck->nqk", q, k) / q.shape[1] ** 0.5
                attn_spread = float(att.std(-1).mean())
            row = {"step": step, "attn_logit_std": attn_spread, "lam_mb": lm["lam_mb"], "mask_mean": float(mask.mean()),
                   "mask_std": float(mask.flatten(1).std(1).mean()), "mask_whole": float(whole_image_share(mask)),
                   "logit_mean": float(s.mean()), "logit_spread_samples": float(s.flatten(1).mean(1).std()),
                   "logit_spread_pixels": float(s.flatten(1).std(1).mean()),
                   "value_bias": float(value_conv.bias), "value_w_norm": float(value_conv.weight.norm()),
                   "g_bias_mb": grads["mb"][0], "g_bias_mask": grads["mask"][0],
                   "g_w_mb": grads["mb"][1], "g_w_mask": grads["mask"][1],
                   "loss_one": float(terms["one"]), "loss_mb": float(terms["mb"]),
                   "momentum": method.current_momentum()}
            if step % args.probe == 0:
                with torch.no_grad():
                    target = method._targets(y)
                    lam, perm = lm["lam_mb"], lm["perm_mb"]
                    t = torch.lerp(target[perm], target, lam)
                    for tag, m in (("whole_self", 0.0), ("mixup", 1.0 - lam), ("whole_partner", 1.0)):
                        xm = torch.lerp(x, x[perm], m)
                        row[f"probe_{tag}"] = float(soft_target_cross_entropy(
                            method._logits(method.model_k, method._switch_k, xm, True), t))
                    row["probe_block"] = float(soft_target_cross_entropy(
                        method._logits(method.model_k, method._switch_k, lm["x_mb"], True), t))
            loss = sum(method.loss_weights.get(k, 1.0) * v for k, v in terms.items())
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()
            method.after_step()
            run.schedule.step()
            rows.append(row)
            step += 1
            if step >= args.steps:
                break
        run.epoch += 1
    hook.remove()
    qhook.remove()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in rows for k in r}, key=lambda k: list(rows[-1]).index(k) if k in rows[-1] else 99)
    keys = list(rows[0]) + [k for k in keys if k not in rows[0]]
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    for r in rows[:: max(1, len(rows) // 24)]:
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))


if __name__ == "__main__":
    main()
