"""``automix bench --launcher slurm``: the job array through submitit's local executor against the local launcher,
the sbatch script and the jobs in flight through a fake SLURM, a stop and requeue of a task, and the options."""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from automix import bench, cluster
from automix.cli import main


def protocol(tmp_path: Path, **base) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny",
        "base": {"dataset": "digits", "subset": 64, "epochs": 1, "model": "preact_resnet18", "width": 4,
                 "batch_size": 16, "progress": False, "save_images": False, "model_ema": True, "threads": 1,
                 "cache_dir": str(tmp_path / "cache"), **base},
        "methods": {"vanilla": {"method": "none"}, "cutmix": {"method": "cutmix", "alpha": 0.2}},
        "seeds": [0],
    }))
    return path


def test_job_array_on_the_local_executor_writes_what_the_local_launcher_writes(tmp_path, capsys):
    pytest.importorskip("submitit")
    proto = protocol(tmp_path)
    assert main(["bench", str(proto), "--root", str(tmp_path / "local"), "--report", str(tmp_path / "local.md")]) == 0
    slurm = ["bench", str(proto), "--root", str(tmp_path / "array"), "--report", str(tmp_path / "array.md"),
             "--launcher", "slurm", "--submitit-executor", "local", "--slurm-time", "10", "--gpus-per-run", "0"]
    capsys.readouterr()
    assert main([*slurm, "--wait"]) == 0
    err = capsys.readouterr().err
    assert "submitted 2 run(s)" in err and "vanilla seed 0: job" in err and "cutmix seed 0: job" in err
    local = json.loads((tmp_path / "local" / "tiny.json").read_text())
    array = json.loads((tmp_path / "array" / "tiny.json").read_text())
    cells = [(r["method"], r["seed"], r["config_hash"]) for r in local["runs"]]
    assert [(r["method"], r["seed"], r["config_hash"]) for r in array["runs"]] == cells
    assert [c[:2] for c in cells] == [("cutmix", 0), ("vanilla", 0)]
    for a, b in zip(array["runs"], local["runs"]):
        assert set(a["metrics"]) == set(b["metrics"]) and set(a["summary"]) == set(b["summary"])
        assert a["config"] == b["config"]
        assert a["metrics"]["val_top1"] == b["metrics"]["val_top1"]  # same config, same seed, one thread: same run
    section = "<!-- accuracy-tiny:start -->"
    strip = [line for line in (tmp_path / "array.md").read_text().split(section)[1].splitlines()
             if not line.startswith(("automix bench", "| "))]
    assert strip == [line for line in (tmp_path / "local.md").read_text().split(section)[1].splitlines()
                     if not line.startswith(("automix bench", "| "))]
    record = json.loads((tmp_path / "array" / "tiny" / "cutmix" / "seed0" / "job.json").read_text())
    assert record["executor"] == "local" and record["options"]["time"] == 10
    # Again: every run is finished, so nothing is submitted and no run is touched.
    done = tmp_path / "array" / "tiny" / "cutmix" / "seed0" / "metrics.json"
    stamp, jobs = done.stat().st_mtime_ns, sorted((tmp_path / "array" / "tiny" / ".submitit").iterdir())
    assert main(slurm) == 0
    err = capsys.readouterr().err
    assert "submit" not in err and done.stat().st_mtime_ns == stamp
    assert sorted((tmp_path / "array" / "tiny" / ".submitit").iterdir()) == jobs
    assert json.loads((tmp_path / "array" / "tiny.json").read_text()) == array


def fake_slurm(tmp_path: Path, monkeypatch, sacct: str = "") -> Path:
    """srun, sbatch (keeps the script, answers job 4242) and sacct (prints ``sacct``) on the PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scripts = {"srun": "exit 0",
               "sbatch": f'n=$(ls {tmp_path}/sbatch-*.sh 2>/dev/null | wc -l); cp "$1" {tmp_path}/sbatch-$n.sh; '
                         'echo "Submitted batch job 4242"',
               "sacct": f"printf '{sacct}'"}
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def test_sbatch_script_and_jobs_in_flight_through_a_fake_slurm(tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit")
    proto = protocol(tmp_path)
    data = yaml.safe_load(proto.read_text())
    data["launcher"] = {"kind": "slurm", "partition": "cpu", "time": 30, "setup": ["module load cuda"]}
    proto.write_text(yaml.safe_dump(data))
    fake_slurm(tmp_path, monkeypatch)
    args = ["bench", str(proto), "--root", str(tmp_path / "runs"), "--report", str(tmp_path / "r.md"),
            "--slurm-partition", "gpu", "--slurm-time", "90", "--gpus-per-run", "1", "--array-parallelism", "1",
            "--slurm-account", "acc", "--sbatch", "exclude=node7"]
    assert main(args) == 0  # the protocol says slurm: no --launcher needed
    script = (tmp_path / "sbatch-0.sh").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=1", "#SBATCH --array=0-1%1",
                 "#SBATCH --account=acc", "#SBATCH --exclude=node7", "#SBATCH --signal=USR2@90",
                 "#SBATCH --job-name=automix-tiny", "module load cuda"):
        assert line in script, line
    runs = tmp_path / "runs" / "tiny"
    ids = {m: json.loads((runs / m / "seed0" / "job.json").read_text())["job_id"] for m in ("vanilla", "cutmix")}
    assert ids == {"cutmix": "4242_0", "vanilla": "4242_1"}  # the protocol's order
    assert (runs / "vanilla" / "seed0" / "bench.yaml").is_file()
    assert "| vanilla | 0/1 |" in (tmp_path / "r.md").read_text()
    # SLURM still runs one task and lost the other: only the lost one is submitted again.
    fake_slurm(tmp_path, monkeypatch, sacct="JobID|State|NodeList\\n4242_0|RUNNING|n1\\n4242_1|FAILED|n1\\n")
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "cutmix seed 0: job 4242_0 RUNNING; not submitted again" in err and "vanilla seed 0: submit (start)" in err
    assert "#SBATCH --array" not in (tmp_path / "sbatch-1.sh").read_text()  # one task: a plain job
    # sacct knows neither job (accounting off, or the jobs forgotten): both are taken as ended and submitted again.
    fake_slurm(tmp_path, monkeypatch, sacct="JobID|State|NodeList\\n")
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count("sacct knows no state of job") == 2 and err.count("submit (start)") == 2


def test_stopped_task_saves_and_its_requeued_task_continues(tmp_path):
    pytest.importorskip("submitit")
    # Long enough to be caught running: a checkpoint every step, evaluation only at the end.
    proto = bench.load_protocol(protocol(tmp_path, epochs=40, checkpoint_interval=1, eval_interval=1000))
    cell = bench.grid_cells(proto, tmp_path / "runs", ["cutmix"])[0]
    cell.out.mkdir(parents=True)
    (cell.out / "bench.yaml").write_text(bench.to_yaml(cell.cfg))
    task = cluster.CellJob(str(cell.out), "cutmix", 0, requeue_wait_s=0)
    result = {}
    thread = threading.Thread(target=lambda: result.update(task()))
    thread.start()
    deadline = time.monotonic() + 120
    while not (cell.out / "last.pt").is_file() and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    # What submitit's SIGUSR2 handler does: it requeues only a task with a `checkpoint`, and runs what that returns.
    from submitit.core.utils import DelayedSubmission

    submitted = DelayedSubmission(task)
    assert hasattr(submitted.function, "checkpoint")
    requeued = submitted._checkpoint_function()
    thread.join(timeout=120)
    assert not bench.is_done(cell.out), "the run finished before it was stopped; make it longer"
    assert result == {"method": "cutmix", "seed": 0, "status": "stopped", "exit": 143}
    assert (cell.out / "last.pt").is_file() and "stopped by SIGTERM; saved" in (cell.out / "train.log").read_text()
    assert isinstance(requeued.function, cluster.CellJob) and requeued.function.out == str(cell.out)
    assert requeued.result()["status"] == "done"  # the requeued task continues the run
    log = (cell.out / "train.log").read_text()
    assert log.count("bench task: ") == 2 and "--resume auto" in log.split("bench task: ")[2].splitlines()[0]
    assert json.loads((cell.out / "metrics.json").read_text())["epochs"] == 40


def test_task_leaves_a_busy_or_finished_run_alone(tmp_path):
    from automix.train.rundir import RunLock

    out = tmp_path / "run"
    out.mkdir()
    lock = RunLock(out)
    try:
        assert cluster.CellJob(str(out), "m", 0)()["status"] == "busy"
    finally:
        lock.release()
    (out / "metrics.json").write_text("{}")
    assert cluster.CellJob(str(out), "m", 0)()["status"] == "done"
    assert not (out / "train.log").exists()


def test_local_jobs_in_flight_are_not_submitted_again(tmp_path, capsys):
    proto = bench.load_protocol(protocol(tmp_path))
    for cell in bench.grid_cells(proto, tmp_path / "runs"):
        cell.out.mkdir(parents=True)
        (cell.out / "job.json").write_text(json.dumps({"job_id": os.getpid(), "executor": "local", "folder": "x"}))
    options = cluster.launcher_options({}, {"time": 5, "executor": "local"})
    assert cluster.submit_grid(proto, tmp_path / "runs", options) == []
    assert capsys.readouterr().err.count("running (local); not submitted again") == 2


def test_dry_run_lists_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # a dry run needs no submitit
    root = tmp_path / "runs"
    assert main(["bench", str(protocol(tmp_path)), "--root", str(root), "--launcher", "slurm", "--dry-run"]) == 0
    assert capsys.readouterr().err.count(": submit (start)") == 2 and not root.exists()


def test_missing_submitit_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)
    args = ["bench", str(protocol(tmp_path)), "--root", str(tmp_path / "runs"), "--launcher", "slurm",
            "--slurm-time", "5"]
    assert main(args) == 2
    assert 'pip install "automix[cluster]"' in capsys.readouterr().err


def test_options_are_checked_and_named(tmp_path, capsys):
    pytest.importorskip("submitit")
    assert cluster.launcher_options({"time": 5, "partition": "a"}, {"partition": "b", "sbatch": {"x": 1}}) == \
        cluster.SlurmOptions(time=5, partition="b", sbatch={"x": "1"})
    cases = [({"tme": 5}, {}, "unknown key.*did you mean time"), ({"kind": "pbs"}, {}, "kind must be"),
             ({}, {"time": 0}, "--slurm-time must be an int >= 1, got 0"),
             ({"gpus_per_run": -1}, {}, r"launcher.gpus_per_run must be an int >= 0, got -1"),
             ({"setup": "module load x"}, {}, "setup must be a list"), ({}, {"mem_gb": 0}, "--mem-gb"),
             ({}, {"executor": "pbs"}, "--submitit-executor must be one of")]
    for launcher, flags, message in cases:
        with pytest.raises((ValueError, TypeError), match=message):
            cluster.launcher_options(launcher, flags)
    proto = protocol(tmp_path)
    with pytest.raises(ValueError, match="--slurm-time .* is required"):
        cluster.make_executor(cluster.SlurmOptions(executor="local"), tmp_path / "s", "tiny")
    assert main(["bench", str(proto), "--root", str(tmp_path / "r"), "--slurm-partition", "gpu"]) == 2
    assert "--slurm-partition is an option of --launcher slurm" in capsys.readouterr().err
    data = yaml.safe_load(proto.read_text())
    data["launcher"] = {"kind": "slurm", "partitoin": "gpu"}
    proto.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="launcher: unknown key.*partition"):
        bench.load_protocol(proto)


def test_train_command_resumes_and_runs_several_processes(tmp_path):
    assert bench.train_command(tmp_path)[1:4] == ["-m", "automix", "train"]
    (tmp_path / "last.pt").write_bytes(b"")
    cmd = bench.train_command(tmp_path, processes=2)
    assert cmd[1:7] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "automix"]
    assert cmd[-2:] == ["--resume", "auto"]
    with pytest.raises(ValueError, match="processes must be an int >= 1, got 0"):
        bench.train_command(tmp_path, processes=0)


def test_an_extending_protocol_takes_the_launcher_and_changes_keys(tmp_path):
    parent = protocol(tmp_path)
    data = yaml.safe_load(parent.read_text())
    data["launcher"] = {"kind": "slurm", "time": 60, "partition": "gpu"}
    parent.write_text(yaml.safe_dump(data))
    child = tmp_path / "c.yaml"
    child.write_text(yaml.safe_dump({"extends": "p.yaml", "methods": {"vanilla": None}, "launcher": {"time": 30}}))
    assert bench.load_protocol(child).launcher == {"kind": "slurm", "time": 30, "partition": "gpu"}
    child.write_text(yaml.safe_dump({"extends": "p.yaml", "methods": {"vanilla": None}, "launcher": ["slurm"]}))
    with pytest.raises(TypeError, match="launcher must be a dict"):
        bench.load_protocol(child)
