"""`algm report`: render every paper table and figure from the run rows (conf/report.yaml)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from ..engine.spec import report_error
from . import build_report


@hydra.main(config_path="pkg://algm_cli.conf", config_name="report", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Write results/tables, results/figures and results/report.md; print what was written."""
    try:
        paths, warnings = build_report(cfg.runs_dir, cfg.paper_dir, cfg.out_dir)
    except (ValueError, FileNotFoundError, OSError) as err:
        report_error(err, "algm report")
    for warning in warnings:
        print(f"warning: {warning}")
    tables = sum(1 for p in paths if p.suffix == ".md" and p.parent.name == "tables")
    figures = sum(1 for p in paths if p.suffix == ".png")
    print(f"wrote {tables} tables (Markdown + LaTeX) and {figures} figures; index: {paths[-1]}")
