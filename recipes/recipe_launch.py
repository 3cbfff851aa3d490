"""Training stages in a child process on every visible GPU: the `launch:` block and the command it becomes.

A recipe's top-level `launch:` (defaults for every training stage) or a stage's own `launch:` maps onto
`LaunchConfig`. `num_processes: auto` is every GPU this node sees (CUDA_VISIBLE_DEVICES, else the NVIDIA driver's
device list; 1 on a CPU machine) times `num_machines`. The command is `accelerate launch` (DDP, or DeepSpeed /
FSDP through `config: recipes/accelerate/zero2.yaml`), or `torchrun` (`launcher: torchrun`, and always for
several processes on a CPU, where `accelerate launch --cpu` silently starts one). Either runs this file as the
child: `python recipes/recipe_launch.py CONFIG_CLASS RUN_FUNCTION CONFIG.json RESULT.json` ("module:attribute"
references) builds the stage's typed config from the JSON, runs the stage, and rank 0 writes its result to
RESULT.json (or its one-line error beside it). Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ERROR_SUFFIX = ".error"  # beside RESULT.json: the child's one-line error, for the runner to print
LAUNCHERS = ("accelerate", "torchrun", "inline")


@dataclass
class LaunchConfig:
    """How a training stage is started (`accelerate launch` flags; `inline` runs it in the runner's process)."""

    launcher: str = "accelerate"  # accelerate | torchrun | inline
    num_processes: Any = "auto"  # auto (visible GPUs x num_machines; 1 on CPU) or a total process count
    config: str | None = None  # accelerate config file, e.g. recipes/accelerate/zero2.yaml (DeepSpeed ZeRO-2)
    num_machines: int = 1
    machine_rank: Any = 0  # this node's rank; "auto" reads SLURM_NODEID / NODE_RANK
    main_process_ip: str | None = None  # rank-0 node's address (multi-node)
    main_process_port: int = 29500
    mixed_precision: str | None = None  # accelerate's default; a stage's own setting (e.g. vla mixed_precision) wins
    extra_args: list[str] = field(default_factory=list)  # appended to the launcher's flags verbatim

    def __post_init__(self) -> None:
        from datasets_build.errors import ConfigError

        if self.launcher not in LAUNCHERS:
            raise ConfigError(f"launcher: must be one of {list(LAUNCHERS)}, got {self.launcher!r}")
        if not (self.num_processes == "auto" or (isinstance(self.num_processes, int) and self.num_processes >= 1)):
            raise ConfigError(f"num_processes: must be 'auto' or an integer >= 1, got {self.num_processes!r}")
        if self.num_machines < 1:
            raise ConfigError(f"num_machines: must be >= 1, got {self.num_machines}")
        if not (self.machine_rank == "auto" or (isinstance(self.machine_rank, int) and self.machine_rank >= 0)):
            raise ConfigError(f"machine_rank: must be 'auto' or an integer >= 0, got {self.machine_rank!r}")
        if self.num_machines > 1 and not self.main_process_ip:
            raise ConfigError("main_process_ip: required when num_machines > 1 (the rank-0 node's address)")
        if self.config is not None and not Path(self.config).is_file():
            in_project = HERE.parent / self.config  # recipes/accelerate/zero2.yaml from any working folder
            if not in_project.is_file():
                raise ConfigError(f"config: {self.config}: no such accelerate config file")
            self.config = str(in_project)
        if self.mixed_precision not in (None, "no", "fp16", "bf16", "fp8"):
            raise ConfigError(f"mixed_precision: must be no, fp16, bf16 or fp8, got {self.mixed_precision!r}")

    def rank(self) -> int:
        """This node's machine rank (`auto`: SLURM_NODEID, else NODE_RANK, else 0)."""
        if self.machine_rank == "auto":
            return int(os.environ.get("SLURM_NODEID") or os.environ.get("NODE_RANK") or 0)
        return int(self.machine_rank)

    def processes(self) -> int:
        """Total processes over all machines (`auto`: visible GPUs per node x machines, 1 per node on CPU)."""
        if self.num_processes == "auto":
            return max(1, visible_gpus()) * self.num_machines
        return int(self.num_processes)


def visible_gpus() -> int:
    """GPUs this process may use, without importing torch: CUDA_VISIBLE_DEVICES, else the driver's devices."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        entries = [e for e in visible.split(",") if e.strip()]
        return 0 if not entries or entries[0].strip() == "-1" else len(entries)
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        return sum(1 for p in proc.iterdir() if p.is_dir())
    dev = Path("/dev")
    return sum(1 for p in dev.glob("nvidia*") if re.fullmatch(r"nvidia\d+", p.name)) if dev.is_dir() else 0


def launch_command(
    launch: LaunchConfig, config_class: str, run_function: str, config_json: Path, result_json: Path
) -> list[str]:
    """The child command that runs `run_function` on the `config_class` config in `config_json` under `launch`."""
    child = [str(HERE / "recipe_launch.py"), config_class, run_function, str(config_json), str(result_json)]
    python = sys.executable
    if launch.launcher == "inline":
        return [python, *child]
    total = launch.processes()
    per_node = max(1, total // launch.num_machines)
    gpus = visible_gpus()
    if launch.launcher == "torchrun" or (gpus == 0 and per_node > 1 and launch.config is None):
        cmd = [python, "-m", "torch.distributed.run", f"--nproc_per_node={per_node}", f"--nnodes={launch.num_machines}"]
        if launch.num_machines > 1:
            cmd += [f"--node_rank={launch.rank()}", f"--master_addr={launch.main_process_ip}"]
            cmd += [f"--master_port={launch.main_process_port}"]
        else:
            cmd += ["--standalone"]
        return [*cmd, *launch.extra_args, *child]
    cmd = [python, "-m", "accelerate.commands.launch", "--quiet"]  # the child reports its own error
    if launch.config:
        cmd += ["--config_file", launch.config]
    elif total > 1 and gpus > 0:
        cmd += ["--multi_gpu"]
    elif gpus == 0:
        cmd += ["--cpu"]
    cmd += ["--num_processes", str(total), "--num_machines", str(launch.num_machines)]
    if launch.num_machines > 1:
        cmd += ["--machine_rank", str(launch.rank()), "--main_process_ip", str(launch.main_process_ip)]
        cmd += ["--main_process_port", str(launch.main_process_port)]
    if launch.mixed_precision or not launch.config:  # the stage's own precision setting wins over "no"
        cmd += ["--mixed_precision", launch.mixed_precision or "no"]
    if not launch.config:
        cmd += ["--dynamo_backend", "no"]
    if total == 1 and launch.num_machines == 1 and not launch.config:
        cmd += ["--num_cpu_threads_per_process", str(max(1, len(os.sched_getaffinity(0))))]
    return [*cmd, *launch.extra_args, *child]


def describe(launch: LaunchConfig) -> str:
    """One line for the plan: launcher, processes and engine."""
    if launch.launcher == "inline":
        return "in the runner's process"
    total = launch.processes()
    gpus = visible_gpus()
    where = f"{gpus} visible GPU(s)" if gpus else "CPU"
    engine = f", {launch.config}" if launch.config else ""
    nodes = f" on {launch.num_machines} machines" if launch.num_machines > 1 else ""
    auto = " (auto)" if launch.num_processes == "auto" else ""
    return f"{launch.launcher}: {total} process(es){auto}{nodes}, {where}{engine}"


def launcher_available(launch: LaunchConfig) -> str | None:
    """None when the launcher can start here, else why not (checked before any stage runs)."""
    if launch.launcher == "inline":
        return None
    import importlib.util

    module = "accelerate" if launch.launcher == "accelerate" else "torch"
    if importlib.util.find_spec(module) is None:
        return f"launcher {launch.launcher}: the {module} package is not installed"
    if launch.config and launch.launcher == "accelerate":
        text = Path(launch.config).read_text(encoding="utf-8")
        if "DEEPSPEED" in text and importlib.util.find_spec("deepspeed") is None:
            return f"config {launch.config}: needs deepspeed (pip install deepspeed)"
    if shutil.which(sys.executable) is None:
        return f"python {sys.executable} not found"
    return None


def child_main(argv: list[str]) -> int:
    """Entry point of the child process: run one stage from its JSON config; rank 0 writes the result."""
    import importlib

    from datasets_build.configs import build_config
    from datasets_build.errors import ToolkitError

    config_ref, run_ref, config_path, result_path = argv
    result_file = Path(result_path)
    rank = int(os.environ.get("RANK", "0"))

    def load(ref: str) -> Any:
        module, _, attr = ref.partition(":")
        return getattr(importlib.import_module(module), attr)

    try:
        body = json.loads(Path(config_path).read_text(encoding="utf-8"))
        config = build_config(load(config_ref), body, where=f"{config_path}")
        result = load(run_ref)(config)
    except ToolkitError as exc:
        if rank == 0:  # the runner prints it as its one-line error
            result_file.with_name(result_file.name + ERROR_SUFFIX).write_text(str(exc) + "\n", encoding="utf-8")
        else:
            print(f"error (rank {rank}): {exc}", file=sys.stderr)
        return 2
    if rank == 0:
        tmp = result_file.with_name(f".{result_file.name}.tmp")
        tmp.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
        tmp.replace(result_file)
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
