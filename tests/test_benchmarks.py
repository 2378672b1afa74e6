"""The benchmark scripts in benchmarks/ run end to end as smoke runs (``--quick --no-write``) and print their tables.

Each run is a child process started the way the scripts' docstrings say (from the repository root with
PYTHONPATH=src), single-threaded so that it stays short and leaves other work on the machine alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"

# Run the mixers script as if timm and the `mixup` package were not installed: a None entry in sys.modules makes
# `import mixup` fail and importlib.util.find_spec("timm") return None, which is how the script looks for them.
WITHOUT_OPTIONAL = """
import runpy, sys
sys.modules["timm"] = None
sys.modules["mixup"] = None
sys.argv = ["benchmarks/mixers.py", *sys.argv[1:]]
runpy.run_path("benchmarks/mixers.py", run_name="__main__")
"""


def run(*cmd: str, allow_write: bool = False) -> str:
    env = {**os.environ, "PYTHONPATH": "src", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert allow_write or "wrote " not in proc.stdout  # --no-write: no file touched
    return proc.stdout


def table_rows(out: str) -> dict[str, list[str]]:
    """Markdown table rows keyed by their first cell, each as its list of cells."""
    rows = {}
    for line in out.splitlines():
        if line.startswith("| ") and line.endswith(" |"):
            cells = [c.strip() for c in line[2:-2].split(" | ")]
            rows.setdefault(cells[0], cells)
    return rows


def test_mixers_quick():
    doc_mtime = DOC.stat().st_mtime if DOC.exists() else None
    out = run("benchmarks/mixers.py", "--quick", "--no-write")
    assert "Command: `PYTHONPATH=src python benchmarks/mixers.py --quick --no-write` (**quick smoke run" in out
    assert "| method | mode | 32px ms | 32px ×floor | 32px timm ms (our speed-up) |" in out
    rows = table_rows(out)
    for name in ("lerp floor: `torch.lerp(x, x[perm], 0.3)`", "`mixup`", "`cutmix`", "`mixup_cutmix` (trimmed mean)"):
        assert name in rows, name
    assert len(rows["`mixup`"]) == 2 + 4 * 2 + 1  # method, mode, 4 columns per shape, page faults
    assert "Targets:" in out
    assert (DOC.stat().st_mtime if DOC.exists() else None) == doc_mtime


def test_mixers_without_timm_or_mixup_package():
    out = run("-c", WITHOUT_OPTIONAL, "--quick", "--no-write", "--mixers", "mixup,cutmix", "--shapes", "32px")
    rows = table_rows(out)
    assert set(rows) >= {"`mixup`", "`cutmix`"}
    for name in ("`mixup`", "`cutmix`"):
        method, mode, ms, floor, timm, pkg, *_ = rows[name]
        assert float(ms) > 0 and float(floor) > 0
        assert timm == "–" and pkg == "–", rows[name]  # the comparison columns stay empty
    kinds = {line.split()[1] for line in out.splitlines() if line.startswith("   32px ")}  # one line per timed case
    assert kinds == {"floor", "clone", "copy", "automix"}, kinds


def test_step_time_quick():
    out = run("benchmarks/step_time.py", "--quick", "--no-write")
    assert "## Training step time" in out
    assert "| method | w8 ms/step | w8 img/s | w8 × vanilla |" in out
    rows = table_rows(out)
    for label in ("vanilla", "mixup", "cutmix", "AutoMix", "SAMix", "AdAutoMix"):
        assert label in rows, label
    assert rows["vanilla"][3] == "1.00"  # ratios are to vanilla
    assert "Where AutoMix's time goes" in out and "**sum of pieces**" in rows
    # The pieces come from the record_function labels inside AutoMix.compute_losses: each one was seen.
    for label in ("automix/encoder_features", "automix/mix_block", "automix/mixing", "automix/encoder_mixed",
                  "automix/backbone"):
        cells = next(cells for name, cells in rows.items() if f"`{label}`" in name)
        assert float(cells[1]) > 0, cells
    assert float(next(c for n, c in rows.items() if n.startswith("backward to the input"))[1]) > 0
    # AdAutoMix's pieces likewise, its K passes over the source images (the cosine term's cost) among them.
    assert "Where AdAutoMix's time goes" in out and "AdAutoMix's floor, set by its own passes" in out
    for label in ("adautomix/encoder_features", "adautomix/generator", "adautomix/encoder_mixed",
                  "adautomix/encoder_sources", "adautomix/backbone"):
        cells = next(cells for name, cells in rows.items() if f"`{label}`" in name)
        assert float(cells[1]) > 0, cells
    assert "- width 8 (K = 3): " in out
    assert "- width 8: two passes of 8 " in out and "The floor on this machine" in out
    assert "Raw per-step times" not in out  # no JSON named: --quick --no-write writes nothing


def test_step_time_vit_quick():
    out = run("benchmarks/step_time.py", "--vit", "--quick", "--no-write", "--methods", "none,transmix,automix",
              "--no-breakdown")
    assert "## ViT training step time" in out and '`create_model("vit_tiny", num_classes=100)`' in out
    assert "| method | ms/step | img/s | × vanilla |" in out  # one network, no width columns
    rows = table_rows(out)
    assert {"vanilla", "transmix", "AutoMix"} <= set(rows) and rows["vanilla"][3] == "1.00"
    assert "width None" not in out and "wNone" not in out


def _section(text: str, key: str) -> str:
    return text.split(f"<!-- {key}:start -->", 1)[1].split(f"<!-- {key}:end -->", 1)[0]


def test_step_time_render_reproduces_committed_sections(tmp_path):
    """--render rebuilds each committed step-time section from its raw JSON alone: the docs say what the saved
    run measured, and a width-less network is named by its model, not "the network"."""
    for name, key, model in (("step_time.json", "step_time", None),
                             ("step_time_vit.json", "step_time_vit", "vit_tiny")):
        doc = tmp_path / f"{key}.md"
        doc.write_text("# Benchmarks\n")
        run("benchmarks/step_time.py", "--render", f"benchmarks/results/{name}", "--doc", str(doc),
            allow_write=True)
        assert _section(doc.read_text(), key) == _section(DOC.read_text(), key), name
        if model is not None:
            assert f"- **FAIL** `{model}`" in doc.read_text() or f"- **PASS** `{model}`" in doc.read_text()
            assert "the network" not in _section(doc.read_text(), key)


def test_step_time_render_refuses_other_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"widths": []}')
    env = {**os.environ, "PYTHONPATH": "src", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "benchmarks/step_time.py", "--render", str(bad), "--no-write"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and f"--render {bad}" in proc.stderr


def test_vit_attention_overhead_quick():
    out = run("benchmarks/vit_attention_overhead.py", "--quick", "--no-write")
    rows = table_rows(out)
    for label in ("forward", "forward+backward", "attention module, forward"):
        fused, asked = float(rows[label][1]), float(rows[label][2])
        assert fused > 0 and asked > 0, rows[label]
    assert "attention of `blocks.11.attn`" in out


def test_mask_stats_on_a_trained_run(tmp_path):
    from automix.cli import main

    run_dir = tmp_path / "am"
    base = ["train", "--dataset", "digits", "--subset", "64", "--epochs", "1", "--model", "preact_resnet18",
            "--width", "4", "--batch-size", "16", "--no-progress", "--no-save-images", "--cache-dir", str(tmp_path)]
    assert main([*base, "--method", "automix", "--output", str(run_dir)]) == 0
    out = run("benchmarks/mask_stats.py", str(run_dir), "--images", "40", "--passes", "2")
    cells = table_rows(out)[str(run_dir)]
    assert cells[1] == "80"  # 40 images, two passes
    std, gap, whole = float(cells[2]), float(cells[3]), float(cells[4].rstrip("%"))
    assert 0 <= std <= 0.5 and 0 <= gap <= 1 and 0 <= whole <= 100
    assert main([*base, "--method", "mixup", "--output", str(tmp_path / "mx")]) == 0
    env = {**os.environ, "PYTHONPATH": "src", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "benchmarks/mask_stats.py", str(tmp_path / "mx")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0 and "has no Mix Block" in proc.stderr


def test_finetune_tiny(tmp_path):
    """benchmarks/finetune.py --tiny end to end on a stand-in CIFAR-10 folder: the held-apart image folders, one
    pretraining run, fine-tuning runs from its weights, the results file and the report; a second call reuses all."""
    import json

    from test_data import make_folder

    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    source = make_folder(str(tmp_path / "cifar"), classes=classes, per_class=40, size=32, ext=".jpg")
    doc_mtime = DOC.stat().st_mtime if DOC.exists() else None
    cmd = ["benchmarks/finetune.py", "--tiny", "--root", str(tmp_path / "ft"), "--source", source,
           "--methods", "vanilla", "automix", "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": "src", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    data = tmp_path / "ft" / "data"
    assert sorted(os.listdir(data / "pretrain")) == list(classes[:6])
    assert all(len(os.listdir(data / "pretrain" / c)) == 20 for c in classes[:6])
    for c in classes[6:]:  # 10 + 10 per class, disjoint
        train, val = set(os.listdir(data / "finetune" / "train" / c)), set(os.listdir(data / "finetune" / "val" / c))
        assert len(train) == len(val) == 10 and not train & val
    results = json.loads((tmp_path / "ft" / "finetune-cpu-tiny.json").read_text())
    assert sorted(r["method"] for r in results["runs"]) == ["automix", "vanilla"]
    start = results["runs"][0]["config"]["initial_checkpoint"]
    assert start.startswith(str(data / "pretrained-")) and os.path.isfile(start)
    log = (tmp_path / "ft" / "finetune-cpu-tiny" / "automix" / "seed0" / "train.log").read_text()
    assert "automix: re-initialised (6 classes in the file, 4 here): fc.weight, fc.bias" in log
    report = (tmp_path / "ft" / "finetune.md").read_text()
    assert "| vanilla | 1/1 |" in report and "| automix | 1/1 |" in report and "| mixup | 0/1 |" in report
    again = subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "bench:" not in again.stderr, again.stderr[-2000:]  # nothing retrained
    assert (DOC.stat().st_mtime if DOC.exists() else None) == doc_mtime


def test_automix_mask_fit_time_quick():
    out = run("benchmarks/automix_mask_fit_time.py", "--quick")
    rows = table_rows(out)
    labels = ("vanilla", "AutoMix as registered", "AutoMix, mask_min_sharpness=0", "AutoMix, mask_fit=False", "SAMix")
    assert all(float(rows[k][1]) > 0 for k in labels), rows
    ops = {k: int(rows[k][4]) for k in labels}
    # What the script exists to show: the sharpness floor's search adds ops to the step, the mask fit some more;
    # 15 probes per search round (the GPU's choice) cut the floor's ops to a fraction of bisection's (the CPU's).
    probe = {k: int(rows[k][4]) for k in ("AutoMix, one-probe searches (bisection)", "AutoMix, 15-probe searches")}
    order = ["AutoMix, one-probe searches (bisection)", "AutoMix, 15-probe searches", "AutoMix, mask_min_sharpness=0",
             "AutoMix, mask_fit=False", "vanilla"]
    ops.update(probe)
    assert [ops[k] for k in order] == sorted((ops[k] for k in order), reverse=True), ops
    assert len({ops[k] for k in order}) == len(order), ops
    assert ops["AutoMix as registered"] == probe["AutoMix, one-probe searches (bisection)"]  # the CPU bisects
    floor = ops["AutoMix, mask_min_sharpness=0"]
    assert probe["AutoMix, 15-probe searches"] - floor < (probe["AutoMix, one-probe searches (bisection)"] - floor) / 3
    assert "automix/mix_block" in out
