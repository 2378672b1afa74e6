"""``automix bench --launcher slurm``: every unfinished (method, seed) run of a grid as one task of a SLURM job array.

Usage::

    automix bench configs/bench/cifar10_cpu.yaml --root /shared/runs/bench --launcher slurm \\
        --slurm-partition gpu --slurm-time 240 --gpus-per-run 1 --array-parallelism 8
    # later, the same command: collects the finished runs into the results file and the report, skips the
    # runs still queued or running, and submits again the ones that stopped unfinished
    automix bench ... --wait          # or stay until the array has ended, then collect and report

Submission goes through submitit (https://github.com/facebookincubator/submitit), an optional dependency:
``pip install "automix[cluster]"``. The same settings can live in the protocol YAML under ``launcher:``
(``kind: slurm`` and the keys of ``LAUNCHER_KEYS``); flags win over it, and ``--launcher local`` ignores it.

A task (``CellJob``) runs its cell exactly as the local launcher does (``automix.bench.run_grid``): ``automix
train --config <run>/bench.yaml --no-progress`` in a child process, with ``--resume auto`` when the run folder
holds a ``last.pt``, output appended to ``<run>/train.log``. So the run folder, its ``bench.yaml``, the config
hash, the caching of finished runs and the results file are the local launcher's, and either launcher can finish
a grid the other began. ``--gpus-per-run N`` above 1 starts the child under ``torch.distributed.run`` with N
processes; ``batch_size`` is per process, so such runs train with N times the protocol's batch (the config hash
does not see N: keep N fixed within a protocol).

The time limit and preemption: submitit asks SLURM for SIGUSR2 90 s before the limit. The task then stops its
child with SIGTERM (``automix train`` saves ``last.pt`` after the step in flight and exits) and submitit requeues
the same task, which continues the run with ``--resume auto`` (at most ``max_requeues`` times after a time-out;
preemptions do not count). The child itself ignores SIGUSR2, which SLURM sends to every process of the job, so
that the stop goes through its SIGTERM path. A preemption's SIGTERM reaches the child directly and stops it the
same way; the task then waits a minute for submitit's requeue signal before it ends unfinished.

Jobs in flight: each submitted cell's job is recorded in ``<run>/job.json``; a later ``automix bench`` skips a
cell whose job SLURM (``sacct``, through submitit) still lists as pending, running or requeued instead of
submitting it twice, and a task that finds its run folder locked by a running ``automix train`` leaves it alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import bench

# SLURM job states (sacct) of a job that has not ended: its cell must not be submitted again.
ALIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED",
                "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT", "PREEMPTED"}
EXECUTORS = ("slurm", "local")
JOB_RECORD = "job.json"


@dataclass
class SlurmOptions:
    """Where and how the grid's tasks run; each field is a ``launcher:`` key and a flag (``FLAGS``)."""

    time: int | None = None  # minutes of wall clock per task (required)
    partition: str | None = None
    gpus_per_run: int = 1  # 0: CPU-only tasks
    cpus_per_run: int | None = None
    mem_gb: float | None = None
    array_parallelism: int | None = None  # tasks running at once (default: submitit's 256)
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: list[str] = field(default_factory=list)  # shell lines before the task (module load, venv, ...)
    sbatch: dict[str, str] = field(default_factory=dict)  # any other #SBATCH option
    max_requeues: int = 3  # requeues after a time-out (preemptions do not count)
    folder: str | None = None  # submitit's scripts and logs (default: <root>/<name>/.submitit)
    executor: str = "slurm"  # "local": submitit's LocalExecutor, every task at once on this machine (to try it)


FLAGS = {"time": "--slurm-time", "partition": "--slurm-partition", "gpus_per_run": "--gpus-per-run",
         "cpus_per_run": "--cpus-per-run", "mem_gb": "--mem-gb", "array_parallelism": "--array-parallelism",
         "account": "--slurm-account", "qos": "--slurm-qos", "constraint": "--slurm-constraint",
         "setup": "--slurm-setup", "sbatch": "--sbatch", "max_requeues": "--max-requeues",
         "folder": "--submitit-folder", "executor": "--submitit-executor"}
LAUNCHER_KEYS = ("kind", *FLAGS)


def _check(name: str, value: Any, where: str) -> Any:
    """``value`` of option ``name`` checked and normalised; errors name ``where`` and the value."""
    if value is None:
        return None
    ints = {"time": 1, "gpus_per_run": 0, "cpus_per_run": 1, "array_parallelism": 1, "max_requeues": 0}
    if name in ints:
        if isinstance(value, bool) or not isinstance(value, int) or value < ints[name]:
            raise ValueError(f"{where} must be an int >= {ints[name]}, got {value!r}")
    elif name == "mem_gb":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{where} must be a number of GB > 0, got {value!r}")
    elif name == "setup":
        if isinstance(value, str) or not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TypeError(f"{where} must be a list of shell lines, got {value!r}")
    elif name == "sbatch":
        if not isinstance(value, dict) or not all(isinstance(k, str) and k for k in value):
            raise TypeError(f"{where} must map sbatch option names to values, got {value!r}")
        return {k: str(v) for k, v in value.items()}
    elif name == "executor":
        if value not in EXECUTORS:
            raise ValueError(f"{where} must be one of {EXECUTORS}, got {value!r}")
    elif not isinstance(value, str) or not value:
        raise TypeError(f"{where} must be a non-empty str, got {value!r}")
    return value


def launcher_options(launcher: dict[str, Any], flags: dict[str, Any], source: str = "launcher") -> SlurmOptions:
    """The SLURM options from a protocol's ``launcher:`` mapping with ``flags`` (field name -> value) over it.

    Args:
        launcher: the protocol's ``launcher:`` mapping (keys ``LAUNCHER_KEYS``; ``kind`` is ``local`` or ``slurm``).
        flags: values given on the command line, by ``SlurmOptions`` field name; None means not given.
        source: how errors name the mapping (``protocol p.yaml: launcher``).

    Raises:
        ValueError / TypeError: an unknown key, or a value out of range or of the wrong type, named with its key
            or flag and the value.
    """
    import difflib

    unknown = sorted(set(launcher) - set(LAUNCHER_KEYS), key=str)
    if unknown:
        hints = [f"{k} (did you mean {near[0]}?)" if (near := difflib.get_close_matches(str(k), LAUNCHER_KEYS, n=1))
                 else str(k) for k in unknown]
        raise ValueError(f"{source}: unknown key(s) {'; '.join(hints)}; known: {', '.join(LAUNCHER_KEYS)}")
    kind = launcher.get("kind", "local")
    if kind not in ("local", "slurm"):
        raise ValueError(f"{source}.kind must be 'local' or 'slurm', got {kind!r}")
    values = {}
    for name in FLAGS:
        if flags.get(name) is not None:
            values[name] = _check(name, flags[name], FLAGS[name])
        elif launcher.get(name) is not None:
            values[name] = _check(name, launcher[name], f"{source}.{name}")
    return SlurmOptions(**values)


# ---------------------------------------------------------------------------------------------- the task
def _ignore_usr2() -> None:  # in the child, before exec: an ignored signal stays ignored across exec
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _locked(out: Path) -> bool:
    """Whether a running ``automix train`` holds the run folder's lock (``automix.train.rundir``)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock: train's own check still refuses a second run
        return False
    from .train.rundir import LOCK_NAME

    if not (out / LOCK_NAME).exists():
        return False
    fd = os.open(out / LOCK_NAME, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock this process took
    return False


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


class CellJob:
    """One grid cell as a submitit task: ``automix train`` of its run folder in a child process.

    Calling it trains the cell (or continues it) and returns ``{"method", "seed", "status", "exit"}`` with status
    ``done`` (``metrics.json`` written, now or before), ``busy`` (another run holds the folder) or ``stopped``
    (stopped by a signal, ``last.pt`` kept); a failed run raises ``RuntimeError`` with the end of its
    ``train.log``. submitit calls ``checkpoint`` on SIGUSR2 (time limit, preemption) and requeues
    the task it returns.

    Args:
        out: the run folder, holding the ``bench.yaml`` written at submission.
        method, seed: the cell, for the result and messages.
        processes: ``automix train`` processes (``automix.bench.train_command``).
        stop_timeout_s: seconds the child gets to save ``last.pt`` after SIGTERM before the task gives up on it.
        requeue_wait_s: seconds a task whose child was stopped by a signal waits for submitit's requeue signal.
    """

    def __init__(self, out: str, method: str, seed: int, processes: int = 1, stop_timeout_s: float = 60.0,
                 requeue_wait_s: float = 60.0) -> None:
        self.out, self.method, self.seed, self.processes = str(out), method, seed, processes
        self.stop_timeout_s, self.requeue_wait_s = stop_timeout_s, requeue_wait_s
        self._proc: subprocess.Popen | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_proc": None}  # a process does not travel; the requeued task starts its own

    def _result(self, status: str, code: int | None) -> dict[str, Any]:
        return {"method": self.method, "seed": self.seed, "status": status, "exit": code}

    def __call__(self) -> dict[str, Any]:
        out = Path(self.out)
        if bench.is_done(out):  # finished by an earlier attempt, or by the local launcher meanwhile
            return self._result("done", None)
        if _locked(out):
            return self._result("busy", None)
        cmd = bench.train_command(out, self.processes)
        bench.clear_stranded(out)
        with (out / "train.log").open("a") as log:
            log.write(f"bench task: {' '.join(cmd[1:])}\n")
            log.flush()
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_ignore_usr2)
            try:
                # Polling, not wait(): the SIGUSR2 handler (submitit's, calling checkpoint) must be
                # able to wait for the child itself, which a wait() in progress here would block.
                while (code := self._proc.poll()) is None:
                    time.sleep(0.5)
            except BaseException:  # cancelled (SIGINT from submitit's local controller) or requeued
                self._stop_child()
                raise
        if code == 0 or bench.is_done(out):
            return self._result("done", code)
        if code in (128 + signal.SIGTERM, 128 + signal.SIGINT) and (out / "last.pt").is_file():
            # A preemption's SIGTERM reached the child first; submitit's requeue signal may follow.
            time.sleep(self.requeue_wait_s)
            return self._result("stopped", code)
        raise RuntimeError(f"run {out} failed with exit code {code}; end of {out / 'train.log'}: "
                           f"{_tail(out / 'train.log')}")

    def _stop_child(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # automix train: finish the step, save last.pt, exit
        try:
            proc.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:  # the last checkpoint written stays intact (saves are atomic)
            pass

    def checkpoint(self) -> Any:
        """Stop the child (it saves ``last.pt``) and return the same cell as a new task for submitit to requeue."""
        from submitit.helpers import DelayedSubmission

        self._stop_child()
        return DelayedSubmission(CellJob(self.out, self.method, self.seed, self.processes, self.stop_timeout_s,
                                         self.requeue_wait_s))


# ---------------------------------------------------------------------------------------------- submission
def import_submitit():
    try:
        import submitit
    except ImportError:
        raise ImportError("the slurm launcher needs submitit: pip install \"automix[cluster]\" "
                          "(or pip install submitit)") from None
    return submitit


def _jobs_in_flight(cells: list[bench.Cell]) -> dict[Path, str]:
    """run folder -> "job <id> <STATE>" for the cells whose recorded job has not ended."""
    records = {}
    for cell in cells:
        path = cell.out / JOB_RECORD
        if not cell.done and path.is_file():
            try:
                records[cell.out] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
    alive = {}
    slurm = {out: r for out, r in records.items() if r.get("executor") == "slurm"}
    if slurm:
        submitit = import_submitit()
        submitit.SlurmJob.watcher.clear()  # states read now, not remembered from an earlier call in this process
        jobs = {out: submitit.SlurmJob(folder=r["folder"], job_id=str(r["job_id"])) for out, r in slurm.items()}
        submitit.SlurmJob.watcher.update()  # one sacct call for every recorded job
        for out, job in jobs.items():
            state = submitit.SlurmJob.watcher.get_state(job.job_id, mode="cache").split(" ")[0]
            if state in ALIVE_STATES:
                alive[out] = f"job {job.job_id} {state}"
            elif state == "UNKNOWN":  # sacct failed, or has forgotten the job: a second task would leave a
                # running run alone (CellJob), so submitting again costs at most an idle task
                print(f"bench: {out}: sacct knows no state of job {job.job_id}; taken as ended", file=sys.stderr)
    for out, r in records.items():
        if r.get("executor") == "local":  # the job id is the pid of submitit's local controller
            try:
                os.kill(int(r["job_id"]), 0)
            except (OSError, ValueError):
                continue
            alive[out] = f"job {r['job_id']} running (local)"
    return alive


def make_executor(options: SlurmOptions, folder: Path, name: str):
    """A submitit executor for ``options`` writing its scripts and logs under ``folder``."""
    submitit = import_submitit()
    if options.time is None:
        raise ValueError("--slurm-time (launcher.time) is required with --launcher slurm: the minutes of wall clock "
                         "each run may take (longer runs are requeued and resumed)")
    try:
        executor = submitit.AutoExecutor(folder=str(folder), cluster=options.executor,
                                         slurm_max_num_timeout=options.max_requeues,
                                         local_max_num_timeout=options.max_requeues)
    except RuntimeError as exc:  # submitit: 'Could not detect "srun"'
        raise RuntimeError(f"--launcher slurm: {exc} (automix bench submits from a machine with srun and sbatch; "
                           "--submitit-executor local tries the job array on this machine)") from None
    params = {"name": f"automix-{name}", "timeout_min": options.time, "nodes": 1, "tasks_per_node": 1,
              "gpus_per_node": options.gpus_per_run, "cpus_per_task": options.cpus_per_run, "mem_gb": options.mem_gb,
              "slurm_partition": options.partition, "slurm_array_parallelism": options.array_parallelism,
              "slurm_account": options.account, "slurm_qos": options.qos, "slurm_constraint": options.constraint,
              "slurm_setup": options.setup or None, "slurm_additional_parameters": options.sbatch or None}
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def submit_grid(proto: bench.Protocol, root: Path, options: SlurmOptions, methods: list[str] | None = None,
                seeds: list[int] | None = None, dry_run: bool = False) -> list[tuple[bench.Cell, Any]]:
    """Submit every cell that is neither done nor in flight as one task of a job array; returns (cell, job) pairs.

    Each submitted cell gets its ``bench.yaml`` (as the local launcher writes it) and a ``job.json`` naming its job.
    ``dry_run`` lists the cells that would be submitted and writes nothing (and needs no submitit).
    """
    root = Path(root).resolve()  # the tasks may start in another directory than this process
    cells = bench.grid_cells(proto, root, methods, seeds)
    flight = {} if dry_run else _jobs_in_flight(cells)
    todo = []
    for cell in cells:
        if cell.done:
            continue
        if cell.out in flight:
            print(f"bench: {cell.method} seed {cell.seed}: {flight[cell.out]}; not submitted again", file=sys.stderr,
                  flush=True)
            continue
        todo.append(cell)
        how = "continue from last.pt" if (cell.out / "last.pt").is_file() else "start"
        print(f"bench: {cell.method} seed {cell.seed}: submit ({how})", file=sys.stderr, flush=True)
    if dry_run or not todo:
        return []
    folder = Path(options.folder).resolve() if options.folder else root / proto.name / ".submitit"
    executor = make_executor(options, folder, proto.name)
    for cell in todo:
        cell.out.mkdir(parents=True, exist_ok=True)
        (cell.out / "bench.yaml").write_text(bench.to_yaml(cell.cfg))
    tasks = [CellJob(str(cell.out), cell.method, cell.seed, max(1, options.gpus_per_run)) for cell in todo]
    with executor.batch():  # one job array (a single cell: one plain job)
        jobs = [executor.submit(task) for task in tasks]
    for cell, job in zip(todo, jobs):
        record = {"job_id": str(job.job_id), "executor": options.executor, "folder": str(folder),
                  "submitted": time.strftime("%Y-%m-%d %H:%M:%S"), "options": dataclasses.asdict(options)}
        (cell.out / JOB_RECORD).write_text(json.dumps(record, indent=1) + "\n")
    ids = sorted({str(job.job_id).split("_")[0] for job in jobs})
    print(f"bench: submitted {len(jobs)} run(s) as job(s) {', '.join(ids)} ({options.executor}); logs in {folder}",
          file=sys.stderr, flush=True)
    return list(zip(todo, jobs))


def wait_for(submitted: list[tuple[bench.Cell, Any]]) -> list[str]:
    """Wait until every submitted task has ended; returns one line per cell that did not finish."""
    problems = []
    for cell, job in submitted:
        try:
            result = job.result()
        except Exception as exc:  # submitit re-raises the task's error, or reports a job that died
            lines = [line for line in str(exc).strip().splitlines() if line.strip()]
            problems.append(f"{cell.method} seed {cell.seed} (job {job.job_id}): {lines[-1] if lines else exc!r}")
            continue
        if not bench.is_done(cell.out):
            problems.append(f"{cell.method} seed {cell.seed} (job {job.job_id}): {result.get('status')}, not finished")
        print(f"bench: {cell.method} seed {cell.seed}: job {job.job_id} {result.get('status')}", file=sys.stderr,
              flush=True)
    return problems
