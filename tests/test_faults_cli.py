"""Command-line faults (issue 13, items 7-15): each test feeds the exact input the issue names.

Every user error must be one line ``automix <cmd>: error: ...`` naming the option and the value.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import spawn_ddp_ranks, write_tiny_protocol
from test_reliability import same_weights, summary

from automix.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "digits", "--subset", "64", "--epochs", "1", "--img-size", "8", "--width", "4",
        "--batch-size", "16", "--eval-batch-size", "128", "--no-progress", "--no-save-images", "--method", "cutmix"]


def train(tmp_path: Path, out: str, *args: str) -> int:
    return main(["train", *TINY, "--output", str(tmp_path / out), "--cache-dir", str(tmp_path / "cache"), *args])


def spawn(tmp_path: Path, out: str, *args: str, script: str = "") -> subprocess.Popen:
    """``automix train`` in a child process (one thread), after running ``script`` in it."""
    argv = ["train", *TINY, "--output", str(tmp_path / out), "--cache-dir", str(tmp_path / "cache"), *args]
    code = script + f"\nfrom automix.cli import main\nimport sys\nsys.exit(main({argv!r}))\n"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'tests'}"}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def epochs_of(run: Path) -> list[str]:
    with (run / "summary.csv").open() as f:
        return [r["epoch"] for r in csv.DictReader(f)]


def one_error_line(err: str, cmd: str = "train") -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"automix {cmd}: error: "), err
    return lines[0]


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)


# ---------------------------------------------------------------- 7: one run per run dir


def test_rerun_into_a_run_dir_is_refused_and_resume_continues(tmp_path, capsys):
    """Item 7: a rerun without --resume would append a second epoch-0 row and overwrite the checkpoints."""
    assert train(tmp_path, "r") == 0
    before = (tmp_path / "r" / "last.pt").read_bytes()
    capsys.readouterr()
    assert train(tmp_path, "r") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "output" in line and str(tmp_path / "r") in line and "--resume auto" in line
    assert epochs_of(tmp_path / "r") == ["0"] and (tmp_path / "r" / "last.pt").read_bytes() == before
    assert train(tmp_path, "r", "--epochs", "2", "--resume", "auto") == 0
    assert epochs_of(tmp_path / "r") == ["0", "1"]


def test_a_run_dir_in_use_is_refused_and_a_killed_run_leaves_no_lock(tmp_path, capsys):
    """Item 7: two runs at once into one --output; the lock dies with its process (kill -9 included)."""
    proc = spawn(tmp_path, "r", "--subset", "480", "--epochs", "50", "--checkpoint-interval", "2")
    try:
        wait_for(tmp_path / "r" / "last.pt", proc)
        for extra in ([], ["--resume", "auto"]):
            assert train(tmp_path, "r", *extra) == 2
            line = one_error_line(capsys.readouterr().err)
            assert f"in use by another automix run (pid {proc.pid})" in line and "--output" in line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    rows = epochs_of(tmp_path / "r") if (tmp_path / "r" / "summary.csv").exists() else []
    assert rows == [str(i) for i in range(len(rows))], "the refused runs wrote nothing"
    # The dead run holds no lock: its run continues from where it was killed.
    assert train(tmp_path, "r", "--subset", "480", "--checkpoint-interval", "2", "--resume", "auto") == 0
    assert epochs_of(tmp_path / "r") == ["0"]


def test_bench_restarts_a_cell_killed_before_its_first_checkpoint(tmp_path):
    """Item 7 keeps `automix bench` working: a cell with bench files and a stale summary but no last.pt."""
    from automix import bench

    proto_path = write_tiny_protocol(tmp_path / "p.yaml", tmp_path / "cache", subset=64, epochs=1)
    proto = bench.load_protocol(proto_path)
    out = bench.run_dir(tmp_path / "runs", proto, "cutmix", 0)
    out.mkdir(parents=True)
    (out / "summary.csv").write_text("epoch,train_loss\n0,9.9\n")  # killed between the row and last.pt
    (out / "args.yaml").write_text("stale: true\n")
    bench.run_grid(proto, tmp_path / "runs")
    assert epochs_of(out) == ["0"] and (out / "metrics.json").is_file()
    assert "9.9" not in (out / "summary.csv").read_text()


# ---------------------------------------------------------------- 9: an --output that cannot be made


def _read_only(tmp_path: Path, monkeypatch) -> Path:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):  # root ignores modes: make mkdir under it fail as the OS would
        real = Path.mkdir

        def mkdir(self, *a, **k):
            if ro in self.parents:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self, *a, **k)

        monkeypatch.setattr(Path, "mkdir", mkdir)
    return ro


@pytest.mark.parametrize("where", ["under-a-file", "read-only"])
def test_output_that_cannot_be_created_is_one_line(tmp_path, capsys, monkeypatch, where):
    """Item 9: --output under a file or in a read-only folder."""
    if where == "under-a-file":
        (tmp_path / "f").write_text("a file")
        out, why = tmp_path / "f" / "run", "is a file"
    else:
        out, why = _read_only(tmp_path, monkeypatch) / "run", "denied"
    assert main(["train", *TINY, "--output", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("automix train: error: output:") and str(out) in line and why in line


def test_other_outputs_that_cannot_be_created_are_one_line(tmp_path, capsys):
    """Item 9, the same kind: plot --output, eval --output, show --output, bench --root."""
    assert train(tmp_path, "r") == 0
    (tmp_path / "f").write_text("a file")
    bad = str(tmp_path / "f" / "x.png")
    capsys.readouterr()
    cases = [("plot", [str(tmp_path / "r"), "--output", bad]),
             ("eval", [str(tmp_path / "r" / "last.pt"), "--output", bad]),
             ("show", ["--checkpoint", str(tmp_path / "r"), "--output", bad]),
             ("bench", [str(ROOT / "configs" / "bench" / "cifar10_cpu.yaml"), "--root", str(tmp_path / "f" / "b")])]
    for cmd, args in cases:
        assert main([cmd, *args]) == 2, cmd
        line = one_error_line(capsys.readouterr().err, cmd)
        assert "is a file, not a folder" in line and ("--output" in line or "--root" in line), line


# ---------------------------------------------------------------- 8: Ctrl-C and SIGTERM stop cleanly

STOP_RUN = ["--subset", "480", "--epochs", "2", "--seed", "1"]  # 30 steps per epoch
SIGNAL_AT_STEP = """
import os, signal, automix.train.engine as E
calls = {{"n": 0}}
real = E.Run.train_step
def step(self, x, y):
    calls["n"] += 1
    if calls["n"] == {call} and self.info.rank == {rank}:
        os.kill(os.getpid(), signal.{sig})  # a real signal, arriving while this step runs
    return real(self, x, y)
E.Run.train_step = step
"""


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err




@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The uninterrupted run every stopped-and-resumed run must equal."""
    tmp = tmp_path_factory.mktemp("straight")
    code, err = finish(spawn(tmp, "run", *STOP_RUN))
    assert code == 0, err[-3000:]
    return tmp / "run"


def assert_stopped_cleanly(code: int, err: str, sig: signal.Signals) -> str:
    assert code == 128 + sig, err[-3000:]
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("automix train:")]
    assert len(lines) == 1 and err.rstrip().endswith(lines[0]), err
    assert f"stopped by {sig.name}" in lines[0] and "--resume auto" in lines[0] and "last.pt" in lines[0]
    return lines[0]


@pytest.mark.parametrize("sig,call,saved", [(signal.SIGINT, 40, (1, 10)), (signal.SIGTERM, 40, (1, 10)),
                                            (signal.SIGTERM, 30, (1, 0))],
                         ids=["SIGINT-mid-epoch", "SIGTERM-mid-epoch", "SIGTERM-last-step-of-epoch"])
def test_signal_stops_after_the_step_and_resume_continues_exactly(tmp_path, straight, sig, call, saved):
    """Item 8: the step the signal lands in is finished and saved (nothing lost); resume equals no stop."""
    proc = spawn(tmp_path, "run", *STOP_RUN, script=SIGNAL_AT_STEP.format(call=call, rank=0, sig=sig.name))
    line = assert_stopped_cleanly(*finish(proc), sig)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert (state["epoch"], state["step_in_epoch"]) == saved, line  # call 40 = epoch 1's 10th step
    assert f"epoch {saved[0]}, step {saved[1]} of 30" in line
    code, err = finish(spawn(tmp_path, "run", *STOP_RUN, "--resume", "auto"))
    assert code == 0, err[-3000:]
    assert summary(straight) == summary(tmp_path / "run")
    assert same_weights(straight, tmp_path / "run")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_from_outside_then_resume_matches(tmp_path, straight, sig):
    """Item 8: Ctrl-C / a preemption's SIGTERM sent by another process at whatever step it lands."""
    proc = spawn(tmp_path, "run", *STOP_RUN)
    wait_for(tmp_path / "run" / "summary.csv", proc)  # in epoch 1
    proc.send_signal(sig)
    assert_stopped_cleanly(*finish(proc), sig)
    code, err = finish(spawn(tmp_path, "run", *STOP_RUN, "--resume", "auto"))
    assert code == 0, err[-3000:]
    assert summary(straight) == summary(tmp_path / "run")
    assert same_weights(straight, tmp_path / "run")


def test_signal_to_one_ddp_rank_stops_both_at_the_same_step(tmp_path):
    """Item 8 under DDP: only rank 1 is signalled; the ranks agree, rank 0 saves, both exit, none hangs."""
    argv = ["train", *TINY, "--subset", "320", "--epochs", "2", "--dist-timeout", "30",
                "--output", str(tmp_path / "ddp"), "--cache-dir", str(tmp_path / "cache")]
    procs = spawn_ddp_ranks(argv, SIGNAL_AT_STEP.format(call=4, rank=1, sig="SIGTERM"))
    (code0, err0), (code1, err1) = finish(procs[0]), finish(procs[1])
    assert (code0, code1) == (143, 143), err0[-2000:] + err1[-2000:]
    assert "stopped by SIGTERM" in err0 and "automix train:" not in err1  # rank 0 speaks for both
    state = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    assert (state["epoch"], state["step_in_epoch"]) == (0, 4)


def test_second_ctrl_c_aborts_but_repeated_sigterm_does_not():
    """Item 8: a person pressing Ctrl-C twice wants out now; torchrun's SIGTERM after a Ctrl-C must not abort."""
    from automix._signals import StopRequests

    stop = StopRequests().install()
    try:
        stop.training = True
        signal.raise_signal(signal.SIGINT)
        assert stop.signum == signal.SIGINT
        signal.raise_signal(signal.SIGTERM)  # torchrun forwarding the same Ctrl-C
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_to_bench_lets_the_running_cell_save_then_the_rerun_finishes(tmp_path):
    """Item 8 for `automix bench`: it forwards the stop to its training child and waits for it."""
    proto_path = write_tiny_protocol(tmp_path / "p.yaml", tmp_path / "cache", subset=480, epochs=3)
    argv = ["bench", str(proto_path), "--root", str(tmp_path / "runs"), "--report", str(tmp_path / "b.md")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT / 'src'}"}
    code = f"from automix.cli import main\nimport sys\nsys.exit(main({argv!r}))\n"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    cell = tmp_path / "runs" / "tiny" / "cutmix" / "seed0"
    wait_for(cell / "summary.csv", proc)
    proc.send_signal(signal.SIGTERM)  # to bench only, as a scheduler would
    rc, err = finish(proc)
    assert rc == 143 and "Traceback" not in err, err
    assert err.rstrip().splitlines()[-1].startswith("automix bench: stopped by SIGTERM; "), err
    assert "stopped by SIGTERM; saved" in (cell / "train.log").read_text()
    assert not (cell / "metrics.json").exists() and (cell / "last.pt").is_file()
    assert main(argv) == 0
    assert epochs_of(cell) == ["0", "1", "2"]


# ---------------------------------------------------------------- 10: a run without validation


def strict_json(text: str):
    import json

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_run_without_validation_writes_valid_files(tmp_path, capsys):
    """Item 10: --val-split 0 wrote NaN into metrics.json, best_val_top1 -1.0, and `automix plot` crashed."""
    assert train(tmp_path, "r", "--val-split", "0", "--epochs", "2") == 0
    captured = capsys.readouterr()
    run = tmp_path / "r"
    metrics = strict_json((run / "metrics.json").read_text())
    assert strict_json(captured.out) == metrics  # what train prints is strict JSON too
    assert metrics["best_val_top1"] is None and "val_top1" not in metrics and metrics["train_loss"] > 0
    assert "no best.pt is written" in captured.err
    assert not (run / "best.pt").exists() and (run / "last.pt").exists()
    assert [r.split(",")[2] for r in (run / "summary.csv").read_text().splitlines()[1:]] == ["", ""]
    assert main(["plot", str(run), "--output", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 500
    capsys.readouterr()
    assert main(["eval", str(run / "last.pt")]) == 2
    line = one_error_line(capsys.readouterr().err, "eval")
    # Digits has no test split: the advice names none (it said "evaluate it with --split test").
    assert "no validation images" in line and "--split test" not in line and "no held-out test split" in line


def test_every_json_writer_is_strict(tmp_path, capsys):
    """Item 10, the whole kind: no NaN / Infinity in any JSON automix writes; plot survives old NaN cells."""
    from automix import _jsonio

    assert strict_json(_jsonio.dumps({"a": float("nan"), "b": [float("inf"), 1.5], "c": (float("-inf"),)})) == \
        {"a": None, "b": [None, 1.5], "c": [None]}
    assert train(tmp_path, "r") == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "r" / "last.pt"), "--output", str(tmp_path / "e.json")]) == 0
    strict_json(capsys.readouterr().out)
    strict_json((tmp_path / "e.json").read_text())
    summary = tmp_path / "r" / "summary.csv"  # as runs before this fix wrote it
    lines = summary.read_text().splitlines()
    cells = lines[1].split(",")
    cells[2:6] = ["nan", "nan", "", "nan"]
    summary.write_text("\n".join([lines[0], ",".join(cells)]) + "\n")
    assert main(["plot", str(tmp_path / "r"), "--output", str(tmp_path / "c.png")]) == 0


# ---------------------------------------------------------------- 11: eval on what is not a checkpoint


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("finished")
    assert train(tmp, "r") == 0
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp / "r" / "picture.png")
    return tmp / "r"


@pytest.mark.parametrize("name,kind", [("args.yaml", "a YAML file"), ("picture.png", "a PNG image"),
                                       ("summary.csv", "a CSV file")])
def test_eval_of_a_non_checkpoint_says_what_it_is(finished, capsys, name, kind):
    """Item 11: a YAML / PNG got torch's 'weights_only=False' advice; a CSV an IndexError."""
    assert main(["eval", str(finished / name)]) == 2
    line = one_error_line(capsys.readouterr().err, "eval")
    assert f"is not a checkpoint: it is {kind}" in line and str(finished / name) in line
    assert "weights_only" not in line and "IndexError" not in line


def test_no_checkpoint_error_repeats_torchs_unsafe_advice(tmp_path, capsys):
    """Item 11, the same kind: a refused pickle or a truncated file, wherever a checkpoint is loaded."""
    class Evil:
        def __reduce__(self):
            return (os.getpid, ())

    torch.save({"format": "automix-checkpoint-1", "x": Evil()}, tmp_path / "evil.pt")
    (tmp_path / "half.pt").write_bytes(b"PK\x03\x04 half a checkpoint")
    for path, says in ((tmp_path / "evil.pt", "cannot be loaded safely: it holds posix.getpid"),
                       (tmp_path / "half.pt", "is truncated or corrupt (22 bytes; ")):
        for argv in (["eval", str(path)], ["show", "--checkpoint", str(path)],
                     ["train", *TINY, "--output", str(tmp_path / "r"), "--resume", str(path)]):
            assert main(argv) == 2
            line = one_error_line(capsys.readouterr().err, argv[0])
            assert says in line and str(path) in line and "weights_only" not in line, line


def test_a_checkpoint_cut_short_is_called_truncated_not_unsafe(finished, tmp_path, capsys):
    """A real last.pt cut in half (a copy that stopped): torch says '[Errno 22] Invalid argument', and the message
    said 'cannot be loaded safely'; wherever a checkpoint is read, it names the file as truncated or corrupt."""
    half = tmp_path / "half-last.pt"
    whole = (finished / "last.pt").read_bytes()
    half.write_bytes(whole[: len(whole) // 2])
    start = ["train", "--dataset", "digits", "--subset", "64", "--epochs", "1", "--no-progress", "--no-save-images",
             "--cache-dir", str(tmp_path / "cache")]
    for argv in (["eval", str(half)], ["show", "--checkpoint", str(half)],
                 [*start, "--output", str(tmp_path / "r"), "--resume", str(half)],
                 [*start, "--output", str(tmp_path / "i"), "--initial-checkpoint", str(half)]):
        assert main(argv) == 2
        line = one_error_line(capsys.readouterr().err, argv[0])
        assert f"{half} is truncated or corrupt ({len(whole) // 2:,} bytes; torch.load: " in line, line
        assert line.endswith("); copy or write it again") and "safely" not in line


@pytest.mark.parametrize("argv,flag", [(["show", "-n", "0", "--method", "mixup"], "-n"),
                                       (["show", "-n", "-3", "--method", "mixup"], "-n"),
                                       (["eval", "run", "--batch-size", "0"], "--batch-size")])
def test_counts_below_one_name_the_option(capsys, argv, flag):
    """`automix show -n 0` said 'x must be a batch [B, ...] with B >= 1 ...', `-n -3` 'split expects split_size be
    non-negative'."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    value = argv[argv.index(flag) + 1]
    assert f"automix {argv[0]}: error: argument {flag}: must be an integer >= 1, got '{value}'" in \
        capsys.readouterr().err


def test_a_run_folder_is_accepted_as_a_checkpoint(finished, tmp_path, capsys):
    """Item 11: `automix eval RUN_DIR` said 'not found'; now it takes the run's best.pt (else last.pt)."""
    capsys.readouterr()
    assert main(["eval", str(finished)]) == 0
    assert strict_json(capsys.readouterr().out)["checkpoint"] == str(finished / "best.pt")
    (tmp_path / "empty").mkdir()
    assert main(["eval", str(tmp_path / "empty")]) == 2
    assert "holds no best.pt or last.pt" in one_error_line(capsys.readouterr().err, "eval")
    assert main(["show", "--checkpoint", str(finished), "--output", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 500


# ---------------------------------------------------------------- 12: conflicting options

CONFLICTS = [
    (["--method", "cutmix", "--mixup", "0.8"], ("mixup 0.8", "'cutmix'")),
    (["--smoothing", "0.1", "--method-opt", "label_smoothing=0.2"], ("label_smoothing=0.2", "smoothing 0.1")),
    (["--method", "cutmix", "--smoothing", "0.1", "--method-opt", "label_smoothing=0.2"],
     ("label_smoothing=0.2", "smoothing 0.1")),
    (["--method", "cutmix", "--alpha", "0.2", "--method-opt", "alpha=1.0"], ("alpha=1.0", "alpha 0.2")),
    (["--method", "fmix", "--cutmix-minmax", "0.2", "0.8"], ("--cutmix-minmax 0.2 0.8 applies", "'fmix'")),
    (["--method", "gridmix", "--mixup-switch-prob", "0.2"], ("--mixup-switch-prob 0.2", "'gridmix'")),
    (["--mixup", "0.8", "--alpha", "1.0"], ("alpha 1.0", "'mixup_cutmix'")),
    (["--method", "none", "--alpha", "1.0"], ("alpha 1.0", "'none'")),
    (["--method", "automix", "--mixup-mode", "elem"], ("--mixup-mode elem", "'automix'")),
    (["--method", "none", "--mixup-prob", "0.5"], ("--mixup-prob 0.5", "'none'")),
    (["--method", "cutmix", "--mix-block-lr", "0.1"], ("--mix-block-lr 0.1", "'cutmix'")),
    (["--opt", "adamw", "--momentum", "0.5"], ("momentum 0.5", "'adamw'")),
    (["--momentum", "0", "--nesterov"], ("nesterov", "momentum is 0")),
    (["--sched", "none", "--min-lr", "0.01"], ("--min-lr 0.01", "'none'")),
    (["--warmup-lr", "0.01"], ("--warmup-lr 0.01", "warmup_epochs is 0")),
    (["--model-ema-decay", "0.9"], ("--model-ema-decay 0.9", "--model-ema")),
    (["--eval-split", "test", "--val-split", "0.1"], ("--val-split 0.1", "eval_split 'test'")),
    (["--data-dir", "/somewhere"], ("--data-dir /somewhere", "digits")),
    (["--method-opt", "num_classes=3"], ("num_classes=3", "set by the trainer")),
]


@pytest.mark.parametrize("argv,words", CONFLICTS, ids=[" ".join(a) for a, _ in CONFLICTS])
def test_conflicting_options_are_refused_naming_both(tmp_path, capsys, argv, words):
    """Item 12: `--method cutmix --mixup 0.8` dropped --mixup (yet recorded it); `--smoothing 0.1 --method-opt
    label_smoothing=0.2` raised a raw 'multiple values' TypeError. Same kind: every option a config ignores."""
    args = [a for a in TINY if a not in ("--method", "cutmix")]
    assert main(["train", *args, "--output", str(tmp_path / "r"), *argv]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert all(w in line for w in words), line
    assert not (tmp_path / "r").exists(), "refused before anything was written"


def test_a_method_opt_alone_reaches_the_method():
    """Item 12: a method_opts key with a flag of its own is fine when the flag is not given too."""
    import automix
    from automix.train.build import build_method
    from automix.train.config import from_dict, validate

    model = automix.create_model("preact_resnet18", num_classes=10, width=4)
    for method in ("automix", "cutmix"):
        cfg = validate(from_dict({"method": method, "method_opts": {"label_smoothing": 0.2, "alpha": 0.5}}))
        built = build_method(cfg, model, 10, 10, 0)
        assert getattr(built, "mixer", built).label_smoothing == 0.2 and getattr(built, "mixer", built).alpha == 0.5


# ---------------------------------------------------------------- 13: a device that is not there


def test_cuda_without_cuda_says_so_and_lists_the_devices(tmp_path, capsys, monkeypatch, finished):
    """Item 13: `--device cuda` gave torch's 'Expected a torch.device with a specified index'."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for argv in (["train", *TINY, "--output", str(tmp_path / "r"), "--device", "cuda"],
                 ["eval", str(finished), "--device", "cuda"]):
        assert main(argv) == 2
        line = one_error_line(capsys.readouterr().err, argv[0])
        assert "device: 'cuda', but CUDA is not available" in line and "available here: cpu" in line, line
    assert not (tmp_path / "r").exists()
    assert main(["train", *TINY, "--output", str(tmp_path / "r"), "--device", "gpu"]) == 2
    assert "'gpu' is not a device name; available here: cpu" in one_error_line(capsys.readouterr().err)


def test_a_bare_cuda_is_this_process_gpu(monkeypatch):
    """Item 13: torch.cuda.set_device needs an index, so `--device cuda` failed even with a GPU."""
    from automix.train.distributed import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda") == torch.device("cuda", 0)
    assert check_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert check_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="'cuda:2', but there is no GPU 2; available here: cpu, cuda:0, cuda:1"):
        check_device("cuda:2")


# ---------------------------------------------------------------- 14: small things that mislead


def test_show_output_is_the_picture(tmp_path, capsys):
    """Item 14: `automix show --method fmix --output fmix.png` (the CLI epilog's example) ignored --output."""
    out = tmp_path / "fmix.png"
    assert main(["show", "--method", "fmix", "--output", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert out.stat().st_size > 500 and capsys.readouterr().out.strip() == str(out)
    from automix.cli import __doc__ as epilog

    assert "automix show --method fmix --output fmix.png" in epilog


def test_show_refuses_training_flags_it_would_ignore(finished, capsys):
    """Item 14, the same kind: with --checkpoint the run's own config is used, so --method would be ignored."""
    assert main(["show", "--checkpoint", str(finished), "--method", "fmix"]) == 2
    line = one_error_line(capsys.readouterr().err, "show")
    assert "--method 'fmix' is not used with --checkpoint" in line


@pytest.mark.parametrize("argv,expected", [
    (["train", "--lrr", "0.1"], "automix train: error: unrecognized arguments: --lrr 0.1; did you mean --lr?"),
    (["train", "--mixup-swich-prob", "0.3"], "did you mean --mixup-switch-prob?"),
    (["show", "--mthod", "fmix"], "automix show: error: unrecognized arguments: --mthod fmix; did you mean --method?"),
    (["trian"], "automix: error: argument command: invalid choice: 'trian'"),
    (["trian"], "did you mean train?"),
    (["eval", "x.pt", "--split", "tset"], "automix eval: error: argument --split: invalid choice: 'tset'"),
    (["eval", "x.pt", "--split", "tset"], "did you mean test?"),
])
def test_flag_typos_get_a_suggestion_from_the_subcommand(capsys, argv, expected):
    """Item 14: a flag typo printed the top-level usage and no did-you-mean."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err, err
    assert "usage: automix [-h] {train" not in err


def test_yaml_floats_without_a_dot_are_numbers(tmp_path):
    """Item 14: PyYAML reads `lr: 1e-3` as the string '1e-3' (YAML 1.1 wants a dot); it was rejected."""
    from automix.cli import build_parser
    from automix.train.args import config_from_args

    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nmin_lr: 1E-5\nmethod: automix\nmethod_opts: {mask_loss: 5e-2}\n")
    argv = ["train", "--config", str(path), "--method-opt", "lam_margin=1e-2"]
    cfg = config_from_args(build_parser().parse_args(argv))
    assert (cfg.lr, cfg.min_lr) == (1e-3, 1e-5)
    assert cfg.method_opts == {"mask_loss": 0.05, "lam_margin": 0.01}
    path.write_text("lr: fast\n")
    with pytest.raises(TypeError, match=r"^lr must be a number, got 'fast' \(config file .*c\.yaml\)$"):
        config_from_args(build_parser().parse_args(["train", "--config", str(path)]))


def test_wrong_value_types_are_named_as_given(tmp_path):
    """A value of the wrong type typed as a flag is named by its flag (not the config key); one from a file by its
    key and the file."""
    from automix.cli import build_parser
    from automix.train.args import config_from_args

    def parse(*argv):
        return config_from_args(build_parser().parse_args(["train", *argv]))

    with pytest.raises(TypeError, match=r"^--mixup-lam must be a number or a list or a mapping, got 'high'$"):
        parse("--method", "mixup", "--mixup-lam", "high")
    with pytest.raises(TypeError, match=r"^--cutmix-minmax\[0\] must be a number"):
        from automix.train.config import COMMAND_LINE, from_dict
        from_dict({"cutmix_minmax": ["a", 0.8]}, source=COMMAND_LINE)
    path = tmp_path / "r.yaml"
    path.write_text("epochs: 2.5\n")
    with pytest.raises(TypeError, match=r"^epochs must be an integer, got 2.5 \(config file .*r\.yaml\)$"):
        parse("--config", str(path))
    path.write_text("min_lr: .nan\n")
    with pytest.raises(ValueError, match=r"^min_lr must not be NaN \(config file .*r\.yaml\)$"):
        parse("--config", str(path))


def test_unknown_yaml_key_gets_a_suggestion(tmp_path, capsys):
    """Item 14: `method_opt:` in YAML got no hint toward `method_opts`."""
    path = tmp_path / "c.yaml"
    path.write_text("method_opt: {mask_loss: 0.1}\nepoch: 3\n")
    assert main(["train", "--config", str(path), "--output", str(tmp_path / "r")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "method_opt (did you mean method_opts?)" in line and "epoch (did you mean epochs?)" in line


def test_eval_names_its_numbers_as_summary_csv_does(finished, capsys):
    """Item 14: `automix eval` printed top1_eval where summary.csv has val_top1."""
    capsys.readouterr()
    assert main(["eval", str(finished / "last.pt")]) == 0
    result = strict_json(capsys.readouterr().out)
    with (finished / "summary.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    assert {"val_top1", "val_top1_online", "val_loss"} <= set(result) <= set(last) | {
        "checkpoint", "split", "evaluates_on", "images", "method", "model", "dataset", "val_loss_online"}
    assert result["val_top1"] == float(last["val_top1"]) and result["val_top1_online"] == float(last["val_top1_online"])
    assert not any(k.startswith(("top1_", "loss_")) for k in result)


def test_plot_and_show_write_into_the_run_folder(finished, tmp_path, monkeypatch, capsys):
    """Item 14: `automix plot` and `show` wrote into the current folder."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main(["plot", str(finished)]) == 0
    assert main(["show", "--checkpoint", str(finished)]) == 0
    assert capsys.readouterr().out.split() == [str(finished / "curves.png"), str(finished / "show-cutmix.png")]
    assert (finished / "curves.png").is_file() and (finished / "show-cutmix.png").is_file()
    assert main(["plot", str(finished), str(finished.parent / "other")]) == 2  # no summary there: an error ...
    capsys.readouterr()
    (finished.parent / "other").mkdir()
    (finished.parent / "other" / "summary.csv").write_text((finished / "summary.csv").read_text())
    assert main(["plot", str(finished), str(finished.parent / "other")]) == 0  # ... two runs: their folder
    assert (finished.parent / "curves.png").is_file()
    assert main(["show", "--method", "mixup", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert list(cwd.rglob("*")) == [cwd / "runs", cwd / "runs" / "show", cwd / "runs" / "show" / "mixup.png"]


def test_show_samples_across_classes(tmp_path, monkeypatch):
    """Item 14: `automix show` took the first N files, all of one class in a class-sorted folder."""
    from test_data import make_folder

    from automix import viz

    make_folder(str(tmp_path / "imgs"), classes=("a", "b", "c", "d"), per_class=12, size=8)
    shown = {}
    real = viz.save_mix_grid

    def capture(path, source, x, y, **kw):
        shown["y"] = y.tolist()
        return real(path, source, x, y, **kw)

    monkeypatch.setattr(viz, "save_mix_grid", capture)
    assert main(["show", "--method", "cutmix", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "imgs"),
                 "--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "s.png"), "-n", "8"]) == 0
    assert sorted(shown["y"]) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert viz.spread_over_classes(torch.tensor([2, 2, 0, 0, 1]), 3).tolist() == [2, 4, 0]


def test_readme_documents_the_cache_as_the_code_places_it(monkeypatch, tmp_path):
    """Item 14: the first-use cache (150 MB for CIFAR) in ~/.cache/automix was not documented."""
    from automix.data import cache_root

    readme = (ROOT / "README.md").read_text()
    assert "~/.cache/automix" in readme and "AUTOMIX_CACHE" in readme and "--cache-dir" in readme
    monkeypatch.delenv("AUTOMIX_CACHE", raising=False)
    assert cache_root() == os.path.join(os.path.expanduser("~"), ".cache", "automix")
    monkeypatch.setenv("AUTOMIX_CACHE", str(tmp_path / "c"))
    assert cache_root() == str(tmp_path / "c")


# ---------------------------------------------------------------- 15: threads on a shared machine


def test_threads_sets_torch_threads_and_is_recorded(tmp_path, monkeypatch, capsys):
    """Item 15: no way to choose the thread count; torch's default crawls on a busy machine."""
    from automix.train import engine

    seen = []
    real = engine.Run.train_step

    def step(self, x, y):
        seen.append(torch.get_num_threads())
        return real(self, x, y)

    monkeypatch.setattr(engine.Run, "train_step", step)
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    assert train(tmp_path, "r", "--threads", str(want)) == 0
    assert set(seen) == {want} and torch.get_num_threads() == before  # restored for whoever called fit
    assert f"threads: {want}" in (tmp_path / "r" / "args.yaml").read_text()
    capsys.readouterr()
    assert train(tmp_path, "bad", "--threads", "0") == 2
    assert "threads must be >= 1 (or unset), got 0" in one_error_line(capsys.readouterr().err)
    assert "--threads 1" in (ROOT / "README.md").read_text()


def test_run_dir_messages_never_send_the_user_in_a_circle(tmp_path, capsys):
    """Item 7: a dir with a summary but no last.pt (killed before its first checkpoint) cannot be continued;
    and a run that fails before writing anything leaves no run dir behind."""
    out = tmp_path / "r"
    out.mkdir()
    (out / "summary.csv").write_text("epoch,train_loss\n0,2.3\n")
    for extra in ([], ["--resume", "auto"]):
        assert train(tmp_path, "r", *extra) == 2
        line = one_error_line(capsys.readouterr().err)
        assert "holds summary.csv but no last.pt to continue; delete them" in line, line
    assert train(tmp_path, "new", "--resume", "auto") == 2
    assert "drop --resume to start a new run there" in one_error_line(capsys.readouterr().err)
    assert train(tmp_path, "new", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "missing")) == 2
    assert "missing" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "new").exists(), "a failed start leaves no empty run dir"


@pytest.mark.parametrize("argv,text", [
    (["--eval-split", "foo"], "--eval-split must be one of ['val', 'test'], got 'foo'"),
    (["--val-split", "1.5"], "--val-split must be in [0, 1), got 1.5"),
    (["--head-lr-scale", "0"], "--head-lr-scale must be a finite number > 0, got 0.0"),
    (["--sync-debug", "foo"], "--sync-debug must be one of ['warn', 'error'], got 'foo'"),
    (["--initial-checkpoint="], "--initial-checkpoint must be a file path, got ''"),
    (["--model", "timm:resnet18", "--pretrained", "--initial-checkpoint", "a.pt"],
     "--initial-checkpoint a.pt and --pretrained both give the starting weights"),
    (["--epochs", "2", "--mixup-off-epoch", "3"], "--mixup-off-epoch must be below epochs (2)"),
    (["--method", "automix", "--mixup-mode", "elem"], "--mixup-mode elem applies to the input mixers"),
], ids=lambda v: v[0] if isinstance(v, list) else None)
def test_config_errors_name_the_flag_given(tmp_path, capsys, argv, text):
    """Range and conflict errors named the config key (``eval_split must be one of ...``) for a flag."""
    args = [a for a in TINY if a not in ("--method", "cutmix")]
    assert main(["train", *args, "--output", str(tmp_path / "r"), *argv]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert text in line, line


def test_config_file_errors_name_the_key_and_the_file(tmp_path, capsys):
    config = tmp_path / "r.yaml"
    config.write_text("val_split: 1.5\n")
    assert main(["train", *TINY, "--config", str(config), "--output", str(tmp_path / "r")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"val_split must be in [0, 1), got 1.5 (config file {config})" in line, line


def test_show_n_is_capped(capsys):
    """`automix show -n 10000` drew a 10000-row picture (or ran out of memory) with no word."""
    with pytest.raises(SystemExit) as stop:
        main(["show", "-n", "10000", "--method", "mixup"])
    assert stop.value.code == 2
    assert "automix show: error: argument -n: must be at most 64 (one picture row per sample), got '10000'" in \
        capsys.readouterr().err


def test_pad_on_lazily_loaded_images_is_refused(tmp_path, capsys):
    """Images above 96 px are loaded lazily with RandomResizedCrop (no padding): a given --pad used to be ignored
    silently. The default pad is not an error (it is not given)."""
    from test_data import make_folder

    make_folder(str(tmp_path / "data"), classes=("a", "b"), per_class=4, size=120, ext=".jpg")
    args = ["train", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "data"), "--img-size", "112",
            "--epochs", "1", "--batch-size", "2", "--val-split", "0.25", "--workers", "0", "--no-save-images",
            "--width", "4"]
    assert main([*args, "--pad", "4", "--output", str(tmp_path / "r")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--pad 4 pad-crops in-memory images" in line and "img_size 112" in line and "drop --pad" in line
    assert not (tmp_path / "r" / "last.pt").exists()
    assert main([*args, "--output", str(tmp_path / "ok")]) == 0
    assert (tmp_path / "ok" / "last.pt").exists()


def _parse(argv: list[str]):
    import argparse

    from automix.train.args import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser(exit_on_error=False)
    add_config_arguments(parser)
    return config_from_args(parser.parse_args(argv))


@pytest.mark.parametrize("argv, yaml_text, error, match", [
    (["--width", "4", "--model", "vit_tiny"], None, ValueError,
     r"--width 4 applies to the CIFAR ResNets and ResNeXt only .*not to model 'vit_tiny'; drop --width"),
    (["--model", "vit_tiny"], "width: 4\n", ValueError,
     r"width 4 \(config file .*c.yaml\) applies to the CIFAR ResNets and ResNeXt only"),
    (["--widen", "2", "--model", "preact_resnet18"], None, ValueError, r"--widen 2 applies to the WRNs only"),
    (["--img-size", "120", "--model", "vit_tiny", "--model-opt", "patch_size=16"], None, ValueError,
     r"img_size must be a multiple of patch_size.*\(given as --img-size 120; --model-opt patch_size=16\)"),
    (["--model", "vit_tiny"], "img_size: 120\nmodel_opts: {patch_size: 16}\n", ValueError,
     r"\(given as img_size 120 \(config file .*c.yaml\); model_opts patch_size=16 \(config file .*c.yaml\)\)"),
])
def test_model_errors_name_the_flags_and_options_given(tmp_path, argv, yaml_text, error, match):
    from automix.train.build import build_model

    if yaml_text is not None:
        (tmp_path / "c.yaml").write_text(yaml_text)
        argv = [*argv, "--config", str(tmp_path / "c.yaml")]
    cfg = _parse(argv)
    with pytest.raises(error, match=match):
        build_model(cfg, 10, 3, cfg.img_size)


def test_mix_choice_errors_name_mixers():
    import automix
    from automix.train.build import build_method

    model = automix.create_model("preact_resnet18", num_classes=10, width=4)
    with pytest.raises(ValueError, match=r"method 'mix_choice' needs option mixers: give --method-opt mixers="
                                         r"\[mixup,cutmix\] \(YAML method_opts: \{mixers: \[mixup, cutmix\]\}\)"):
        build_method(_parse(["--method", "mix_choice"]), model, 10, 10, 0)
    with pytest.raises(ValueError, match=r"mixers: 'cutmx' is not a mixer; an entry names one of \["):
        build_method(_parse(["--method", "mix_choice", "--method-opt", "mixers=[mixup,cutmx]"]), model, 10, 10, 0)
    # the library's own switch too
    with pytest.raises(ValueError, match=r"mixers: 'cutmx' is not a mixer"):
        automix.create_mixer("mix_choice", mixers=["mixup", ("cutmx", {})])


def test_transmix_with_one_switch_flag_and_a_bad_alpha_named_by_its_flag():
    """--mixup 0.8 alone used to fill cutmix with 0 (`cutmix_alpha must be in (0.0, inf], got 0.0`); a value given
    that TransMix refuses is named by its flag."""
    from test_vit import tiny_vit

    from automix.train.build import build_method
    from automix.train.config import switch_defaults

    assert build_method(_parse(["--method", "transmix", "--mixup", "0.8"]), tiny_vit(), 4, 10, 0).mixer.cutmix_alpha \
        == switch_defaults("transmix")["cutmix"] == 1.0
    with pytest.raises(ValueError, match=r"cutmix_alpha must be in \(0.0, inf\], got 0.0 \(given as --cutmix 0.0, "
                                         r"YAML cutmix\)"):
        build_method(_parse(["--method", "transmix", "--cutmix", "0"]), tiny_vit(), 4, 10, 0)


def test_yaml_mixup_lam_error_names_the_file_and_the_refusal_lists_every_method_taking_it(tmp_path):
    (tmp_path / "c.yaml").write_text("method: mixup\nmixup_lam: [0.1, 0.4, 0.5]\n")
    with pytest.raises(ValueError, match=r"mixup_lam .*got \[0.1, 0.4, 0.5\] \(config file .*c.yaml\)"):
        _parse(["--config", str(tmp_path / "c.yaml")])
    with pytest.raises(ValueError, match=r"--mixup-lam 0.3 applies to the methods that draw lambda \(the input "
                                         r"mixers, alignmix, .*snapmix, transmix\), not to method 'tokenmix'"):
        _parse(["--method", "tokenmix", "--mixup-lam", "0.3"])


def test_quoted_integers_in_yaml_read_as_integers(tmp_path):
    """`method_opts: {mix_samples: '3'}` was refused as `mix_samples=3.0 ... must be int, got float` (a value never
    written); `epochs: '2'` as `got '2'`: a quoted number is the number, for int options as for floats."""
    import automix
    from automix.train.build import build_method

    (tmp_path / "c.yaml").write_text("method: adautomix\nepochs: '2'\nmethod_opts: {mix_samples: '2'}\n")
    cfg = _parse(["--config", str(tmp_path / "c.yaml")])
    assert cfg.epochs == 2 and cfg.method_opts["mix_samples"] == 2
    build_method(cfg, automix.create_model("preact_resnet18", num_classes=10, width=4), 10, 10, 0)
    (tmp_path / "c.yaml").write_text("epochs: '2.5'\n")
    with pytest.raises(TypeError, match=r"epochs must be an integer, got '2.5' \(config file"):
        _parse(["--config", str(tmp_path / "c.yaml")])
