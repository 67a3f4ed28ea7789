"""Where the experiment config files are, in a checkout and in an installed package.

`setup.py` installs the repository's `configs/*.py` as the package data directory `w2s_jax/configs_files/`, so a
non-editable install has them too. `configs_dir()` returns that directory (the repository's `configs/` in a
checkout or an editable install). `resolve_config_spec("rm_helpful:demo")` turns a short name into a path
(`<configs_dir>/rm_helpful.py:demo`); a spec that names an existing file (`configs/rm_helpful.py:demo` from the
repository root, any other path) is returned unchanged. `python -m w2s_jax.main --config=rm_helpful:demo` goes
through `resolve_config_args`.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def configs_dir() -> Path:
    """The installed config files (`w2s_jax/configs_files/`), else the checkout's `configs/`."""
    for candidate in (PACKAGE_DIR / "configs_files", PACKAGE_DIR.parent / "configs"):
        if candidate.is_dir() and any(candidate.glob("*.py")):
            return candidate
    raise FileNotFoundError(f"no config files found in {PACKAGE_DIR / 'configs_files'} or "
                            f"{PACKAGE_DIR.parent / 'configs'}")


def available() -> list[str]:
    return sorted(p.stem for p in configs_dir().glob("*.py") if not p.stem.startswith("_"))


def resolve_config_spec(spec: str) -> str:
    """`path.py[:preset]` when that file exists; else a short name (`rm_helpful`, `rm_helpful.py`, with an optional
    `:preset`) looked up among the installed configs; else `spec` unchanged (the caller reports it missing)."""
    path, sep, preset = spec.partition(":")
    if Path(path).is_file():
        return spec
    name = Path(path).name
    name = name if name.endswith(".py") else name + ".py"
    try:
        found = configs_dir() / name
    except FileNotFoundError:
        return spec
    return f"{found}{sep}{preset}" if found.is_file() else spec


def resolve_config_args(argv: list[str]) -> list[str]:
    """The command line with `--config=NAME[:preset]` (or `--config NAME`) resolved by `resolve_config_spec`."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg.startswith("--config="):
            out[i] = "--config=" + resolve_config_spec(arg.split("=", 1)[1])
        elif arg == "--config" and i + 1 < len(out):
            out[i], out[i + 1] = "--config=" + resolve_config_spec(out[i + 1]), ""
    return [a for a in out if a != ""]


def missing_config(spec: str) -> str:
    """The one error line for a `--config` that is neither a file nor an installed config."""
    try:
        names = ", ".join(available())
    except FileNotFoundError:
        names = "none found"
    return f"--config={spec}: file not found, nor an installed config of that name (installed: {names})"
