"""Every package folder is installed, and Hydra finds the configs as a package."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "algm_cli").rglob("__init__.py")
    }
    assert folders | {"algm_cli.conf"} <= listed


def test_configs_import_as_a_package():
    import algm_cli.conf

    assert (Path(algm_cli.conf.__file__).parent / "run.yaml").is_file()
