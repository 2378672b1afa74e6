"""Which images a run and ``automix eval`` evaluate on, and the split options around it: ``eval --split`` scores
exactly the split asked for and names it (keys, ``evaluates_on``), whatever split the run evaluated on; advice names
only splits that exist; digits has no test split; ``split_seed`` / ``val_split`` that a layout leaves unused are
refused naming the flag or the config file; the fine-grained recipes (``val_split: 0``) run on a ``val/`` folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_data import make_folder

from automix.cli import build_parser, main
from automix.train.args import config_from_args
from automix.train.setup import load_data

BASE = ["--model", "preact_resnet18", "--width", "4", "--batch-size", "8", "--no-progress", "--log-interval", "1000",
        "--no-save-images", "--method", "mixup", "--epochs", "1"]
ROOT = Path(__file__).resolve().parents[1]


def folder(tmp_path, *splits: str) -> Path:
    """A 2-class image folder at 12 px holding ``splits`` (train: 8 per class, val: 3, test: 5)."""
    root = tmp_path / "-".join(splits)
    for split, n in (("train", 8), ("val", 3), ("test", 5)):
        if split in splits:
            make_folder(str(root / split), classes=("ants", "bees"), per_class=n, size=12)
    return root


def train(tmp_path, data, name, *args) -> tuple[int, str]:
    code = main(["train", *BASE, "--dataset", "imagefolder", "--data-dir", str(data), "--cache-dir",
                 str(tmp_path / "cache"), "--output", str(tmp_path / name), *args])
    return code, name


def evaluate(capsys, run: Path, *args) -> tuple[int, dict | str]:
    capsys.readouterr()
    code = main(["eval", str(run), *args])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else err.strip())


def error_line(err: str, cmd: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"automix {cmd}: error: "), err
    return lines[0]


# ---------------------------------------------------------------- automix eval --split

@pytest.mark.parametrize("run_split", ["val", "test"])
def test_eval_scores_exactly_the_split_asked_for(tmp_path, capsys, run_split):
    """A run trained with --eval-split test scored its test images under val_* keys for --split val."""
    data = folder(tmp_path, "train", "val", "test")
    capsys.readouterr()
    assert train(tmp_path, data, "run", "--eval-split", run_split)[0] == 0
    assert f"(16 train / {6 if run_split == 'val' else 10} {run_split}, 2 classes)" in capsys.readouterr().err
    for split, images in (("val", 6), ("test", 10)):
        code, result = evaluate(capsys, tmp_path / "run", "--split", split)
        assert code == 0, result
        assert result["split"] == split and result["images"] == images
        assert result["evaluates_on"] == f"{data / split} ({images} images)"
        named = {k for k in result if k.endswith(("_top1", "_loss", "_online"))}
        assert named == {f"{split}_top1", f"{split}_loss", f"{split}_top1_online", f"{split}_loss_online"}


def test_eval_of_a_split_the_run_does_not_have_says_what_it_has(tmp_path, capsys):
    data = folder(tmp_path, "train", "test")
    assert train(tmp_path, data, "t", "--eval-split", "test")[0] == 0
    code, err = evaluate(capsys, tmp_path / "t", "--split", "val")
    line = error_line(err, "eval")
    assert code == 2 and "--split val: the run of" in line and "trained on every training image (eval_split 'test' " \
        "holds none out) and its data_dir has no val/ folder, so it has no validation images; evaluate it with " \
        "--split test" in line
    # A root of class folders, nothing held out: no test split to advise either.
    classes = tmp_path / "classes"
    make_folder(str(classes), classes=("ants", "bees"), per_class=8, size=12)
    assert train(tmp_path, classes, "c", "--val-split", "0")[0] == 0
    code, err = evaluate(capsys, tmp_path / "c")
    line = error_line(err, "eval")
    assert "held no images out for validation (val_split 0.0)" in line and "has no test split either" in line
    assert "--split test" not in line
    code, err = evaluate(capsys, tmp_path / "c", "--split", "test")
    line = error_line(err, "eval")
    assert f"--split test: data_dir {classes} holds class folders, one set with no test/ folder" in line
    assert "the run held no validation images out either (val_split 0)" in line and "--split val" not in line
    # With a test/ folder beside train/ the advice is there.
    data = folder(tmp_path, "train", "test")
    assert train(tmp_path, data, "v0", "--val-split", "0")[0] == 0
    code, err = evaluate(capsys, tmp_path / "v0")
    line = error_line(err, "eval")
    assert code == 2 and line.endswith("so it has no validation images; evaluate it with --split test")


def test_digits_has_no_test_split_in_train_or_eval(tmp_path, capsys):
    """--eval-split test on digits named load_digits' split='test' and split_indices; eval advised --split test."""
    args = ["train", *BASE, "--dataset", "digits", "--subset", "64", "--cache-dir", str(tmp_path / "cache")]
    capsys.readouterr()
    assert main([*args, "--eval-split", "test", "--output", str(tmp_path / "t")]) == 2
    line = error_line(capsys.readouterr().err, "train")
    assert line == "automix train: error: --eval-split test: the digits dataset has no held-out test split (its " \
                   "1,797 images are one set); evaluate on a share held out of the training images with " \
                   "--eval-split val (--val-split sets the share)"
    assert not (tmp_path / "t").exists()
    config = tmp_path / "digits.yaml"
    config.write_text("dataset: digits\neval_split: test\n")
    assert main([*args, "--config", str(config), "--output", str(tmp_path / "t")]) == 2
    assert f"eval_split 'test' (config file {config}): the digits dataset" in capsys.readouterr().err
    assert main([*args, "--output", str(tmp_path / "v")]) == 0
    code, err = evaluate(capsys, tmp_path / "v", "--split", "test")
    assert error_line(err, "eval") == "automix eval: error: --split test: the digits dataset has no held-out test " \
        "split (its 1,797 images are one set); evaluate it on its validation images with --split val"
    assert main([*args, "--val-split", "0", "--output", str(tmp_path / "none")]) == 0
    code, err = evaluate(capsys, tmp_path / "none")
    line = error_line(err, "eval")
    assert "the digits dataset has no held-out test split" in line and "--split test" not in line


# ---------------------------------------------------------------- split options a layout leaves unused

@pytest.mark.parametrize("layout", ["train+val", "train+test"])
def test_split_seed_without_a_split_to_seed_is_refused(tmp_path, capsys, layout):
    data = folder(tmp_path, *layout.split("+"))
    extra = ["--eval-split", "test"] if layout == "train+test" else []
    capsys.readouterr()
    assert train(tmp_path, data, "r", *extra, "--split-seed", "3")[0] == 2
    line = error_line(capsys.readouterr().err, "train")
    assert "--split-seed 3 is not used: " in line and "so there is no split to seed; drop --split-seed" in line
    if layout == "train+val":
        assert "has a val/ folder" in line and f"give --data-dir {data / 'train'}" in line
    config = tmp_path / "seed.yaml"
    config.write_text("split_seed: 5\n")
    assert train(tmp_path, data, "r", *extra, "--config", str(config))[0] == 2
    line = error_line(capsys.readouterr().err, "train")
    assert f"split_seed 5 (config file {config}) is not used" in line and f"remove split_seed from {config}" in line
    # Used: it seeds --subset's pick, and the share held out of a root of class folders.
    assert train(tmp_path, data, "s", *extra, "--split-seed", "3", "--subset", "8")[0] == 0
    assert train(tmp_path, data / "train", "h", "--split-seed", "3")[0] == 0


def test_val_split_from_a_config_file_is_named_with_it(tmp_path, capsys):
    data = folder(tmp_path, "train", "val")
    config = tmp_path / "share.yaml"
    config.write_text("val_split: 0.1\n")
    capsys.readouterr()
    assert train(tmp_path, data, "r", "--config", str(config))[0] == 2
    line = error_line(capsys.readouterr().err, "train")
    assert f"val_split 0.1 (config file {config}): data_dir {data} has a val/ folder" in line
    assert f"remove val_split from {config}" in line and "--val-split" not in line


# ---------------------------------------------------------------- the fine-grained recipes on a val/ folder

RECIPES = sorted((ROOT / "configs" / "finegrained").glob("*.yaml"))
SMALL = ["--model", "preact_resnet18", "--no-pretrained", "--width", "4", "--img-size", "16", "--epochs", "1",
         "--batch-size", "8", "--no-progress", "--no-save-images"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipes_read_a_val_folder(tmp_path, path):
    """val_split: 0 in a recipe was refused on a val/ folder, with advice about --val-split."""
    data = folder(tmp_path, "train", "val")
    ns = build_parser().parse_args(["train", "--config", str(path), *SMALL, "--data-dir", str(data),
                                    "--eval-split", "val", "--cache-dir", str(tmp_path / "cache")])
    cfg = config_from_args(ns)
    assert cfg.val_split == 0.0
    train_data, train_idx, eval_data, eval_idx = load_data(cfg)
    assert len(train_idx) == 16 and eval_data.root == str(data / "val") and len(eval_idx) == 6


def test_a_recipe_trains_on_train_val_and_train_val_test_folders(tmp_path, capsys):
    recipe = ROOT / "configs" / "finegrained" / "cub200_mixup_r18.yaml"
    args = ["train", "--config", str(recipe), *SMALL, "--cache-dir", str(tmp_path / "cache")]
    full = folder(tmp_path, "train", "val", "test")
    capsys.readouterr()
    assert main([*args, "--data-dir", str(full), "--output", str(tmp_path / "a")]) == 0  # the recipe's test/
    assert f"automix: evaluates on {full / 'test'} (10 images)" in capsys.readouterr().err
    tv = folder(tmp_path, "train", "val")
    assert main([*args, "--data-dir", str(tv), "--output", str(tmp_path / "b")]) == 2
    line = error_line(capsys.readouterr().err, "train")
    assert line == f"automix train: error: eval_split 'test' (config file {recipe}): data_dir {tv} has no test/ " \
                   f"folder (it has train/, val/); give --eval-split val to evaluate on {tv / 'val'}"
    assert main([*args, "--data-dir", str(tv), "--eval-split", "val", "--output", str(tmp_path / "b")]) == 0
    assert f"automix: evaluates on {tv / 'val'} (6 images)" in capsys.readouterr().err


def test_a_whole_config_file_with_the_default_split_options_is_accepted(tmp_path, capsys):
    """args.yaml (or automix bench's bench.yaml) used as --config lists split_seed 0 and val_split 0.2 too: they are
    the defaults, not a choice, so a run on a val/ folder or the test split takes it."""
    data = folder(tmp_path, "train", "val", "test")
    assert train(tmp_path, data, "first", "--eval-split", "test")[0] == 0
    whole = tmp_path / "first" / "args.yaml"
    assert "split_seed: 0" in whole.read_text() and "val_split: 0.2" in whole.read_text()
    for split in ("test", "val"):
        assert train(tmp_path, data, f"again-{split}", "--config", str(whole), "--eval-split", split)[0] == 0
    capsys.readouterr()
    assert train(tmp_path, data, "flag", "--config", str(whole), "--split-seed", "0")[0] == 2  # a flag is a choice
    assert "--split-seed 0 is not used" in capsys.readouterr().err


def test_dataset_splits_finds_the_splits_without_decoding(tmp_path, capsys):
    from test_data import write_cifar_pickles

    from automix.data import dataset_splits

    assert dataset_splits("digits") == ("train",) and dataset_splits("tiny-imagenet", tmp_path) == ("train", "test")
    assert dataset_splits("imagefolder", folder(tmp_path, "train", "test")) == ("train", "test")
    copy = tmp_path / "cifar-copy"  # an ImageFolder copy of the CIFAR-10 training images, as ../shared/data has
    make_folder(str(copy), classes=[f"c{i}" for i in range(10)], per_class=1, size=8)
    write_cifar_pickles(str(tmp_path / "pickles"), "cifar10")
    assert dataset_splits("cifar10", copy) == ("train",)
    assert dataset_splits("cifar10", tmp_path / "pickles") == ("train", "test")
    assert dataset_splits("cifar10", copy, download=True) == ("train", "test")
    capsys.readouterr()
    assert main(["train", *BASE, "--dataset", "cifar10", "--data-dir", str(copy), "--eval-split", "test",
                 "--output", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "cache")]) == 2
    line = error_line(capsys.readouterr().err, "train")
    assert f"--eval-split test: data_dir {copy} is one image folder of the cifar10 training images, with no test " \
           "split" in line and line.endswith("--eval-split val (--val-split sets the share)")


# ---------------------------------------------------------------- automix eval --data-dir

def test_eval_on_another_folder_with_other_class_names_is_refused(tmp_path, capsys):
    """Classes were matched by sorted order: a folder of other classes (same count) scored with shuffled labels."""
    data = folder(tmp_path, "train", "val")
    assert train(tmp_path, data, "run")[0] == 0
    other = tmp_path / "other"
    for split, n in (("train", 8), ("val", 3)):
        make_folder(str(other / split), classes=("ants", "wasps"), per_class=n, size=12)
    code, err = evaluate(capsys, tmp_path / "run", "--data-dir", str(other))
    line = error_line(err, "eval")
    assert code == 2 and "--data-dir" in line and str(other) in line
    assert "missing bees" in line and "extra wasps" in line
    # The same classes in another folder are fine.
    same = tmp_path / "same"
    for split, n in (("train", 8), ("val", 3)):
        make_folder(str(same / split), classes=("ants", "bees"), per_class=n, size=12)
    code, result = evaluate(capsys, tmp_path / "run", "--data-dir", str(same))
    assert code == 0 and result["images"] == 6


def test_eval_on_a_folder_with_another_class_count_is_one_line(tmp_path, capsys):
    data = folder(tmp_path, "train", "val")
    assert train(tmp_path, data, "run")[0] == 0
    more = tmp_path / "more"
    for split, n in (("train", 8), ("val", 3)):
        make_folder(str(more / split), classes=("ants", "bees", "flies", "moths"), per_class=n, size=12)
    code, err = evaluate(capsys, tmp_path / "run", "--data-dir", str(more))
    line = error_line(err, "eval")
    assert code == 2 and "--data-dir" in line and "4 classes" in line and "2 classes" in line, line


def test_eval_of_an_old_checkpoint_without_class_names_compares_the_count(tmp_path, capsys):
    import torch

    data = folder(tmp_path, "train", "val")
    assert train(tmp_path, data, "run")[0] == 0
    for name in ("best.pt", "last.pt"):
        state = torch.load(tmp_path / "run" / name, weights_only=True)
        state.pop("classes", None)
        torch.save(state, tmp_path / "run" / name)
    other = tmp_path / "other"
    for split, n in (("train", 8), ("val", 3)):
        make_folder(str(other / split), classes=("ants", "wasps"), per_class=n, size=12)
    code, result = evaluate(capsys, tmp_path / "run", "--data-dir", str(other))
    assert code == 0, result  # no names to compare: the count matches
    more = tmp_path / "more"
    for split, n in (("train", 8), ("val", 3)):
        make_folder(str(more / split), classes=("a", "b", "c"), per_class=n, size=12)
    code, err = evaluate(capsys, tmp_path / "run", "--data-dir", str(more))
    line = error_line(err, "eval")
    assert "--data-dir" in line and "3 classes" in line and "2 classes" in line, line


def test_eval_split_val_on_another_folder_of_a_test_run_reads_its_val(tmp_path, capsys):
    """_restore loaded the run's own split (test/) from the new folder before switching to the asked one."""
    data = folder(tmp_path, "train", "test")
    assert train(tmp_path, data, "run", "--eval-split", "test")[0] == 0
    other = folder(tmp_path, "train", "val")
    code, result = evaluate(capsys, tmp_path / "run", "--split", "val", "--data-dir", str(other))
    assert code == 0, result
    assert result["split"] == "val" and result["images"] == 6
    assert result["evaluates_on"] == f"{other / 'val'} (6 images)"
