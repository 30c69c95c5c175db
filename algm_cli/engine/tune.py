"""`algm tune`: find ALGM*, the lowest inference tau keeping the baseline's mIoU.

Every probe is an ordinary `algm run` with stages [eval] that reuses the trained checkpoint, so
each probe leaves its row in results_dir (experiment=tune); the chosen tau is then run with all
inference stages and its row is marked tuned=true.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from . import store
from .run import run
from .spec import ConfigError, report_error, resolve_spec, run_key
from .tune_search import find_star_threshold


def variant(cfg: DictConfig, **changes) -> DictConfig:
    """Return a copy of cfg with dotted keys changed (e.g. merge__clap_threshold=0.8)."""
    new = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(new):
        new.pop("tune", None)
        for key, value in changes.items():
            OmegaConf.update(new, key.replace("__", "."), value, merge=False)
    return new


def run_or_load(cfg: DictConfig) -> dict:
    """Return the row of cfg, running it unless an identical run already finished."""
    return run(cfg) or store.finished(cfg.results_dir, run_key(cfg))


def tune(cfg: DictConfig) -> tuple[float, list]:
    """Return (ALGM* tau, probes [(tau, mIoU)]) and write the tuned row."""
    if not resolve_spec(cfg).merge.threshold_based:
        raise ConfigError("algm tune needs a threshold-based merge (merge=algm, clap_only, gbm_only)")
    base = run_or_load(variant(cfg, merge__method="none", merge__clap_layer=None,
                               merge__gbm_layers=[], stages=["train", "eval"]))
    stages = [s for s in cfg.stages if s in ("calibrate", "train")] + ["eval"]
    train_clap, train_gbm = cfg.merge.train_clap_threshold, cfg.merge.train_gbm_threshold
    fixed = dict(merge__train_clap_threshold=train_clap if train_clap is not None else cfg.merge.clap_threshold,
                 merge__train_gbm_threshold=train_gbm if train_gbm is not None else cfg.merge.gbm_threshold,
                 tau=None)

    def evaluate(tau: float) -> float:
        row = run_or_load(variant(cfg, stages=stages, merge__clap_threshold=tau,
                                  merge__gbm_threshold=tau, **fixed))
        print(f"probe tau={tau:.4f}: mIoU {row['miou']:.2f} (baseline {base['miou']:.2f})")
        return float(row["miou"])

    t = cfg.tune
    grid = list(t.grid) if t.grid is not None else None
    tau, probes = find_star_threshold(evaluate, float(base["miou"]), float(t.low), float(t.high),
                                      tol=float(t.tol), grid=grid)
    final = variant(cfg, merge__clap_threshold=tau, merge__gbm_threshold=tau, **fixed)
    row = run_or_load(final)
    row["tuned"] = True
    store.write_row(final.results_dir, row)
    print(f"ALGM* tau = {tau:.4f}: mIoU {row['miou']:.2f} >= baseline {base['miou']:.2f}; "
          f"{len(probes)} probes")
    return tau, probes


@hydra.main(config_path="pkg://algm_cli.conf", config_name="tune", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point of `algm tune`."""
    try:
        tune(cfg)
    except (ConfigError, ValueError) as err:
        report_error(err, "algm tune")
