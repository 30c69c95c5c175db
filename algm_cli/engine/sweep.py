"""`algm sweep`: `algm run` as a Hydra multirun (every combination of comma-separated values).

    algm sweep tau=0.80,0.85,0.90
    algm sweep merge.window=[2,2],[2,4] merge.clap_threshold=range(0.8,0.96,0.05)
    algm sweep +experiment=table5a
    algm sweep tau=0.8,0.9 hydra/launcher=joblib           # parallel local jobs
    algm sweep tau=0.8,0.9 hydra/launcher=submitit_slurm   # one SLURM job per run

Each job is an ordinary run: finished ones are skipped (results_dir holds their rows), an
interrupted training resumes from its last checkpoint, and runs that differ only in inference
settings share one trained checkpoint. So rerunning a killed sweep finishes it.
"""

from __future__ import annotations

import sys

from . import run


def main() -> None:
    """Run `algm run --multirun` with the given overrides."""
    if "--multirun" not in sys.argv and "-m" not in sys.argv:
        sys.argv.insert(1, "--multirun")
    run.main()
