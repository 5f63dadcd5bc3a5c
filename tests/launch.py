"""`accelerate launch` of our CLI in several real processes on this CPU-only machine.

`accelerate launch --cpu --num_processes N` starts ONE process (its simple launcher); `--multi_gpu` goes through
torchrun and, without GPUs, gives N CPU processes joined by gloo (`DistributedType.MULTI_CPU`). Tests check the
ranks really ran (per-rank reports, per-rank RNG states), never just the exit code.
"""

import sys


def accelerate_launch(processes: int, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
        "-m",
        "tinyhistory.cli",
    ]
