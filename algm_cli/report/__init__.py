"""The report: paper tables beside reproduced runs (Markdown + LaTeX) and figures (PNG).

    from algm_cli.report import render_report
    paths = render_report(Path("results/runs"), Path("results/paper"), Path("results/report"))

Heavy imports (pandas, matplotlib) happen inside the functions, so importing this package stays
cheap.
"""

from __future__ import annotations

import logging
from pathlib import Path

LOG = logging.getLogger(__name__)

__all__ = ["build_report", "render_report"]


def _index(out_dir: Path, paths: list[Path], warnings: list[str]) -> Path:
    """Write out_dir/report.md listing the outputs and the warnings; return its path."""
    lines = ["# Report", "", "## Tables", ""]
    links = {p: p.relative_to(out_dir).as_posix() for p in paths}
    lines += [f"- [{p.stem}]({link})" for p, link in links.items() if p.suffix == ".md"]
    lines += ["", "## Figures", ""]
    lines += [f"- ![{p.stem}]({link})" for p, link in links.items() if p.suffix == ".png"]
    lines += ["", "## Warnings", ""] + ([f"- {w}" for w in warnings] or ["- none"])
    from ..engine.store import write_atomic

    path = out_dir / "report.md"
    write_atomic(path, "\n".join(lines) + "\n")
    return path


def build_report(runs_dir: Path, paper_dir: Path, out_dir: Path) -> tuple[list[Path], list[str]]:
    """Render tables, figures and report.md; return (written paths, warnings)."""
    from .figures import render_figures
    from .load import load_runs
    from .paper import load_paper
    from .tables import render_tables

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_runs(runs_dir)
    warnings = list(loaded.warnings)
    paper = load_paper(paper_dir)
    if paper.empty:
        warnings.append(f"{paper_dir}: no paper CSVs; paper columns stay empty")
    paths = render_tables(loaded.rows, paper, out_dir)
    figures, figure_warnings = render_figures(loaded.rows, paper, out_dir)
    warnings += figure_warnings
    paths += figures
    paths.append(_index(out_dir, paths, warnings))
    return paths, warnings


def render_report(runs_dir: Path, paper_dir: Path, out_dir: Path) -> list[Path]:
    """Write out_dir/tables/*.md|*.tex, out_dir/figures/*.png and out_dir/report.md; return paths.

    Skipped files/rows and skipped figures are logged as warnings (and listed in report.md).
    """
    paths, warnings = build_report(runs_dir, paper_dir, out_dir)
    for warning in warnings:
        LOG.warning(warning)
    return paths
