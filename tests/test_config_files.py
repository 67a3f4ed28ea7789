"""configs/ travels with the package: a wheel holds them as w2s_jax/configs_files/, and short names resolve."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from w2s_jax.config_files import available, configs_dir, resolve_config_spec
from w2s_jax.configs import load_config_file

ROOT = Path(__file__).resolve().parents[1]


def test_short_names_resolve_and_paths_stay(tmp_path, monkeypatch):
    assert configs_dir() == ROOT / "configs"  # a checkout (or an editable install) reads the repository's
    assert {"rm_helpful", "dpo_helpful"} <= set(available())
    assert resolve_config_spec("rm_helpful:demo") == f"{ROOT / 'configs' / 'rm_helpful.py'}:demo"
    assert resolve_config_spec("rm_helpful.py") == str(ROOT / "configs" / "rm_helpful.py")
    monkeypatch.chdir(ROOT)
    assert resolve_config_spec("configs/rm_helpful.py:demo") == "configs/rm_helpful.py:demo"
    assert resolve_config_spec("no_such_config") == "no_such_config"  # the caller reports it
    assert load_config_file(resolve_config_spec("rm_helpful:demo")).experiment == "reward_model"


def test_a_non_editable_install_has_the_configs(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "*.egg-info", "build", "__pycache__",
                                                             ".venv", ".pytest_cache", "workdir", "runs"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(tmp_path / "wheel"), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next((tmp_path / "wheel").glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"w2s_jax/configs_files/{p.name}" for p in (ROOT / "configs").glob("*.py")} <= set(names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what pip install puts in site-packages
    code = ("from w2s_jax.config_files import configs_dir, resolve_config_spec; from w2s_jax.configs import "
            "load_config_file; print(configs_dir()); print(load_config_file(resolve_config_spec('dpo_helpful:demo'))"
            ".experiment)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(site)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [str(site / "w2s_jax" / "configs_files"), "dpo"]
