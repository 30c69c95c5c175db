"""The `algm` console script: `algm <command> [hydra overrides]` runs that command's Hydra app.

Each command lives in its own module with a `main()` wrapped by `hydra.main`, whose configs are in
the top-level `conf/` folder (installed as the package `algm_cli.conf`, so editable and regular
installs find them alike). Modules are imported only when their command runs, so `algm --help`
is instant.
"""

from __future__ import annotations

import importlib
import os
import sys

# command -> (module with a Hydra-wrapped main(), one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("algm_cli.engine.run", "one experiment: calibrate, train, eval, throughput, flops"),
    "sweep": ("algm_cli.engine.sweep", "`algm run` over every combination (Hydra multirun)"),
    "tune": ("algm_cli.engine.tune", "ALGM*: lowest inference tau keeping the baseline mIoU"),
    "demo": ("algm_cli.engine.demo", "train the embedded default, then apply ALGM training-free"),
    "flops": ("algm_cli.engine.flops_cli", "GFLOPs of a model at a dataset's crop size (no data)"),
    "report": ("algm_cli.report.cli", "paper tables and figures from the run rows, beside the paper"),
    "analyze": ("algm_cli.analysis.cli", "similarity study, merged-token maps, predictions (PNGs)"),
}


def usage() -> str:
    """Return the top-level help text."""
    width = max((len(n) for n in COMMANDS), default=4)
    lines = [
        "usage: algm <command> [key=value ...] [--help]",
        "",
        "Token merging (ALGM, ToMe, Segformer++) for segmentation ViTs. Commands:",
    ]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += [
        "",
        "`algm <command> --help` lists that command's config groups and keys; overrides use",
        "Hydra syntax, e.g. `algm run model=segmenter backbone=vit_s merge=algm`.",
    ]
    return "\n".join(lines)


def quiet_progress_in_logs(seconds: int = 30) -> None:
    """Outside a terminal (CI, SLURM, `make demo > log`) let tqdm print a bar line per `seconds`."""
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_MININTERVAL", str(seconds))  # read by every tqdm (>= 4.66)


def main(argv: list[str] | None = None) -> int:
    """Dispatch `argv` (default: sys.argv[1:]) to a command; return the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"algm: unknown command {name!r}; expected one of: {', '.join(COMMANDS)}",
              file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2
    quiet_progress_in_logs()
    module = importlib.import_module(COMMANDS[name][0])
    # Hydra reads sys.argv; the program name it shows in help is the full subcommand.
    sys.argv = [f"algm {name}", *rest]
    result = module.main()
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
