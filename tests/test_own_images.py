"""A user's own image folder from the command line: the layouts ROOT/<class>, ROOT/train + ROOT/val and
ROOT/train + ROOT/test, what the run header says it evaluates on, and the layout errors (mismatched class
folders, an empty val folder, a split the folder does not have), each naming the flags to change."""

from __future__ import annotations

import json
import os

import pytest
from test_data import make_folder
from test_train import TINY, rows

from automix.cli import main


def run(tmp_path, capsys, data, *args, name="run"):
    """``automix train`` on ``data`` for one epoch; (exit code, stderr, run dir)."""
    out = tmp_path / name
    code = main(["train", *TINY, "--dataset", "imagefolder", "--data-dir", str(data), "--epochs", "1",
                 "--method", "mixup", "--no-save-images", "--cache-dir", str(tmp_path / "cache"),
                 "--output", str(out), *args])
    return code, capsys.readouterr().err, out


def header(err: str) -> str:
    return next(line for line in err.splitlines() if line.startswith("automix: evaluates on"))


def test_root_of_classes_holds_a_seeded_share_out(tmp_path, capsys):
    data = make_folder(str(tmp_path / "pets"), classes=("cat", "dog"), per_class=20, size=12)
    code, err, out = run(tmp_path, capsys, data)
    assert code == 0, err
    assert header(err) == f"automix: evaluates on 8 images held out of {data} (val_split 0.2, split_seed 0)"
    assert "(32 train / 8 val, 2 classes)" in err


def test_train_and_val_folders_evaluate_on_val(tmp_path, capsys):
    root = tmp_path / "hymenoptera"
    make_folder(str(root / "train"), classes=("ants", "bees"), per_class=12, size=12)
    make_folder(str(root / "val"), classes=("ants", "bees"), per_class=5, size=12)
    make_folder(str(root / "test"), classes=("ants", "bees"), per_class=3, size=12)
    code, err, out = run(tmp_path, capsys, root)
    assert code == 0, err
    assert header(err) == f"automix: evaluates on {root / 'val'} (10 images)"
    assert "(24 train / 10 val, 2 classes)" in err  # every train/ image trains: nothing is held out
    assert len(rows(out)) == 1
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0  # automix eval reads the same val/ folder from the run's config
    assert json.loads(capsys.readouterr().out)["images"] == 10
    assert main(["eval", str(out), "--split", "test"]) == 0  # and test/, read as the run read train/
    assert json.loads(capsys.readouterr().out)["images"] == 6


def test_val_folder_follows_the_training_size(tmp_path, capsys):
    root = tmp_path / "mixed"
    make_folder(str(root / "train"), classes=("a", "b"), per_class=8, size=12)
    make_folder(str(root / "val"), classes=("a", "b"), per_class=2, size=20)  # larger files: decoded at 12 px
    code, err, out = run(tmp_path, capsys, root, "--batch-size", "8")
    assert code == 0, err
    assert header(err).endswith("(4 images)")


def test_train_and_test_folders(tmp_path, capsys):
    root = tmp_path / "set"
    make_folder(str(root / "train"), classes=("a", "b", "c"), per_class=10, size=12)
    make_folder(str(root / "test"), classes=("a", "b", "c"), per_class=3, size=12)
    code, err, _ = run(tmp_path, capsys, root, "--eval-split", "test", "--batch-size", "8", name="t")
    assert code == 0, err
    assert header(err) == f"automix: evaluates on {root / 'test'} (9 images)"
    # Without a val/ folder, --eval-split val holds a share of train/ out, as for a root of classes.
    code, err, _ = run(tmp_path, capsys, root, "--batch-size", "8", name="v")
    assert code == 0, err
    assert header(err).startswith(f"automix: evaluates on 6 images held out of {root / 'train'}")


@pytest.mark.parametrize("layout", ["classes", "train+val"])
def test_a_missing_test_folder_names_the_flags(tmp_path, capsys, layout):
    root = tmp_path / "d"
    if layout == "classes":
        make_folder(str(root), per_class=4)
    else:
        make_folder(str(root / "train"), per_class=4)
        make_folder(str(root / "val"), per_class=2)
    code, err, out = run(tmp_path, capsys, root, "--eval-split", "test")
    assert code == 2 and not out.exists()
    assert "--eval-split test: data_dir" in err and "--eval-split val" in err and "split_indices" not in err
    assert ("has no test/ folder (it has train/, val/)" in err) == (layout == "train+val")


def test_val_split_with_a_val_folder_is_refused(tmp_path, capsys):
    root = tmp_path / "d"
    make_folder(str(root / "train"), per_class=4)
    make_folder(str(root / "val"), per_class=2)
    code, err, _ = run(tmp_path, capsys, root, "--val-split", "0.1")
    assert code == 2 and "--val-split 0.1: " in err and "drop --val-split" in err and str(root / "train") in err


def test_mismatched_class_folders_are_named(tmp_path, capsys):
    root = tmp_path / "d"
    make_folder(str(root / "train"), classes=("ants", "bees", "wasps"), per_class=4)
    make_folder(str(root / "val"), classes=("ants", "flies", "moths"), per_class=2)
    code, err, _ = run(tmp_path, capsys, root)
    assert code == 2
    assert f"val folder {root / 'val'}" in err and "missing bees, wasps; extra flies, moths" in err


def test_empty_val_folder(tmp_path, capsys):
    root = tmp_path / "d"
    make_folder(str(root / "train"), classes=("ants", "bees"), per_class=4)
    os.makedirs(root / "val")
    code, err, _ = run(tmp_path, capsys, root)
    assert code == 2 and f"val folder {root / 'val'} has no class sub-folders" in err
    os.makedirs(root / "val" / "ants")
    os.makedirs(root / "val" / "bees")
    code, err, _ = run(tmp_path, capsys, root)
    assert code == 2 and f"class folder {root / 'val' / 'ants'} has no image files" in err


def test_readme_trains_on_your_own_images_in_three_lines():
    from pathlib import Path

    from automix.cli import build_parser
    from automix.train.args import config_from_args

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Train on your own images\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(block) == 3
    train = block[1].split("#", 1)[0].split()
    assert train[:2] == ["automix", "train"]
    cfg = config_from_args(build_parser().parse_args(train[1:]))
    assert cfg.dataset == "imagefolder" and cfg.data_dir == "DATA" and cfg.pretrained
    for flag in ("--pretrained", "--initial-checkpoint", "--head-lr-scale", "--eval-split", "DATA/val/<class>"):
        assert flag in section, flag
