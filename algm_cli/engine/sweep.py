"""`algm sweep`: `algm run` as a Hydra multirun (every combination of comma-separated values).

    algm sweep tau=0.80,0.85,0.90
    algm sweep merge.window=[2,2],[2,4] merge.clap_threshold=range(0.8,0.96,0.05)
    algm sweep +experiment=table5a
    algm sweep +experiment=table1 dataset=ade20k dry_run=true   # print the runs, run nothing
    algm sweep tau=0.8,0.9 hydra/launcher=joblib           # parallel local jobs
    algm sweep tau=0.8,0.9 hydra/launcher=submitit_slurm   # one SLURM job per run

Each job is an ordinary run: finished ones are skipped (results_dir holds their rows), an
interrupted training resumes from its last checkpoint, and runs that differ only in inference
settings share one trained checkpoint. So rerunning a killed sweep finishes it.

Presets come in two shapes. A grid preset sets `hydra.sweeper.params` (every combination, Hydra's
own multirun). A run-list preset (a table mixing models and methods, e.g. `table1`) sets
`runs: [override line, ...]` or `runs_by_dataset: {dataset: [...]}`; each line is one run (a line
starting with `tune ` is an `algm tune`), crossed with any comma-sweeps given on the command line;
a key both on the command line and in a line takes the line's value, and `tune.*` keys go to the
`tune` lines only.
Run lists execute one after another in this process (tqdm progress); every line is composed and
checked first, so a bad line stops the sweep before anything trains. `dry_run=true` prints one
line per run of either shape, `algm run ...` / `algm tune ...` with its overrides, and exits.
"""

from __future__ import annotations

import itertools
import sys

from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from . import run
from .setup import ConfigError, report_error

DRY_RUN_KEYS = ("dry_run=true", "dry_run=True", "dry_run=1")


def split_overrides(args: list[str]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Return (plain overrides, [(key, sweep values)]) of command-line overrides."""
    plain, axes = [], []
    for override in OverridesParser.create().parse_overrides(args):
        text = override.input_line
        if override.is_sweep_override():
            values = [str(v) for v in override.sweep_string_iterator()]
            axes.append((override.get_key_element(), values))
        else:
            plain.append(text)
    return plain, axes


def _key(override: str) -> str:
    """Return the key of 'key=value' (without a leading + or ~)."""
    return override.split("=", 1)[0].lstrip("+~")


def _compose(config: str, overrides: list[str], hydra_config: bool = False) -> DictConfig:
    """Return the composed config `config` (run / tune) with `overrides`."""
    with initialize_config_module(config_module="algm_cli.conf", version_base="1.3"):
        return compose(config, overrides=overrides, return_hydra_config=hydra_config)


def run_lines(cfg: DictConfig) -> list[str] | None:
    """Return the preset's run list for the config's dataset (None: a grid preset)."""
    if cfg.get("runs_by_dataset") is not None:
        table = cfg.runs_by_dataset
        if cfg.dataset.name not in table:
            raise ConfigError(f"experiment={cfg.experiment} has runs for dataset= "
                              f"{', '.join(table)}; got dataset={cfg.dataset.name}")
        return list(table[cfg.dataset.name])
    return None if cfg.get("runs") is None else list(cfg.runs)


def plan(args: list[str]) -> tuple[list[tuple[str, list[str]]], bool]:
    """Return (every run of `algm sweep args` as (command, overrides), is a run-list preset)."""
    plain, axes = split_overrides(args)
    cfg = _compose("run", [p for p in plain if not _key(p).startswith("tune.")], hydra_config=True)
    lines = run_lines(cfg)
    params = cfg.hydra.sweeper.params
    params = {} if params is None else OmegaConf.to_container(params, resolve=False)
    given = {key for key, _ in axes}
    preset_axes = [(k, split_overrides([f"{k}={v}"])[1][0][1] if "," in str(v) else [str(v)])
                   for k, v in params.items() if k not in given]
    grid = preset_axes + axes
    keys = [key for key, _ in grid]
    entries = []
    for line in (lines if lines is not None else [""]):
        words = line.split()
        command = "tune" if words[:1] == ["tune"] else "run"
        words = words[1:] if command == "tune" else words
        for values in itertools.product(*(v for _, v in grid)):
            own = {_key(w) for w in words}  # the line's keys win over the command line's
            kept = [p for p in plain if _key(p) not in own
                    and (command == "tune" or not _key(p).startswith("tune."))]
            entries.append((command, [*kept, *words, *(f"{k}={v}" for k, v in zip(keys, values))]))
    return entries, lines is not None


def _execute(entries: list[tuple[str, list[str]]]) -> None:
    """Compose every entry (stopping at the first bad one), then run them in order."""
    from .tune import tune

    configs = [(command, _compose(command, overrides)) for command, overrides in entries]
    for command, cfg in tqdm(configs, desc="sweep", unit="run"):
        (tune if command == "tune" else run.run)(cfg)


def main() -> None:
    """Run `algm run --multirun` with the given overrides (or the preset's run list / dry run)."""
    args = [a for a in sys.argv[1:] if a not in ("--multirun", "-m")]
    dry = any(a in DRY_RUN_KEYS for a in args)
    args = [a for a in args if not a.startswith("dry_run=")]
    try:
        entries, list_preset = plan(args)
        if dry:
            for command, overrides in entries:
                print(f"algm {command} " + " ".join(overrides))
            print(f"# {len(entries)} runs (dry run: nothing was run)")
            return
        if list_preset:
            _execute(entries)
            return
    except (ConfigError, ValueError) as err:
        report_error(err, "algm sweep")
    except Exception as err:  # a Hydra composition error: one line, exit 2
        if type(err).__module__.startswith("hydra") or "omegaconf" in type(err).__module__:
            report_error(err, "algm sweep")
        raise
    sys.argv = [sys.argv[0], "--multirun", *args]
    run.main()
