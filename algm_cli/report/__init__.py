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


def _index(out_dir: Path, paths: list[Path], warnings: list[str],
           provenance: list[str] | None = None) -> Path:
    """Write out_dir/report.md: provenance, the outputs and the warnings; return its path."""
    lines = ["# Report", "", *(provenance or []), "## Tables", ""]
    links = {p: p.relative_to(out_dir).as_posix() for p in paths}
    lines += [f"- [{p.stem}]({link})" for p, link in links.items() if p.suffix == ".md"]
    lines += ["", "## Figures", ""]
    lines += [f"- ![{p.stem}]({link})" for p, link in links.items() if p.suffix == ".png"]
    lines += ["", "## Warnings", ""] + ([f"- {w}" for w in warnings] or ["- none"])
    from ..engine.store import write_atomic

    path = out_dir / "report.md"
    write_atomic(path, "\n".join(lines) + "\n")
    return path


def build_report(runs_dir: Path, paper_dir: Path, out_dir: Path, include_smoke: bool = False,
                 require_rows: bool = False) -> tuple[list[Path], list[str]]:
    """Render tables, figures and report.md; return (written paths, warnings).

    smoke=true rows count only with include_smoke. With require_rows (the CLI), a missing
    `runs_dir` raises FileNotFoundError and one without valid rows ValueError, before anything
    is rewritten; without it the tables show the papers' numbers only.
    """
    from .figures import render_figures
    from .load import load_runs
    from .paper import load_paper
    from .segformerpp import render_segformerpp_tables
    from .tables import render_tables

    if require_rows and not Path(runs_dir).is_dir():
        raise FileNotFoundError(f"runs_dir={runs_dir}: no such folder (expected the folder of "
                                "run rows that `algm run` writes, e.g. results/runs)")
    loaded = load_runs(runs_dir, include_smoke)
    warnings = list(loaded.warnings)
    if require_rows and loaded.rows.empty:
        why = "; ".join(warnings[:3]) or "no *.csv files"
        raise ValueError(f"runs_dir={runs_dir}: no valid run rows ({why}); nothing rewritten")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paper = load_paper(paper_dir)
    if paper.empty:
        warnings.append(f"{paper_dir}: no paper CSVs; paper columns stay empty")
    rows = loaded.rows
    segmentation = rows if "task" not in rows.columns else rows[rows["task"] != "pose"]
    paths = render_tables(segmentation, paper, out_dir)  # pose rows: segformerpp.py's tables
    paths += render_segformerpp_tables(loaded.rows, paper, paper_dir, out_dir)  # training, pose
    figures, figure_warnings = render_figures(loaded.rows, paper, out_dir)
    warnings += figure_warnings
    paths += figures
    from .provenance import provenance_lines

    paths.append(_index(out_dir, paths, warnings, provenance_lines(loaded.rows)))
    return paths, warnings


def render_report(runs_dir: Path, paper_dir: Path, out_dir: Path) -> list[Path]:
    """Write out_dir/tables/*.md|*.tex, out_dir/figures/*.png and out_dir/report.md; return paths.

    Skipped files/rows and skipped figures are logged as warnings (and listed in report.md).
    """
    paths, warnings = build_report(runs_dir, paper_dir, out_dir)
    for warning in warnings:
        LOG.warning(warning)
    return paths
