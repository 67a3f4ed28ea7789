"""Entry point: python -m w2s_jax.main --config=rm_helpful[:demo] --workdir=DIR [--config.a.b=v].

`--config` takes a config file path or the short name of an installed config (`rm_helpful:demo`).
`--print_config` prints the resolved config and exits; `--dry_run` validates it and lists every model the run would
train or reuse (`experiments/plan.py`), without training."""
from __future__ import annotations

import os
import sys
import tempfile

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (a preset after ':').",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "workdir", "Directory for checkpoints, logs and results.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace results.json of a different config in --workdir "
                               "(otherwise such a run is refused); its metrics.jsonl and tensorboard/ are renamed "
                               "*.replaced-<UTC time> first.")
_PRINT_CONFIG = flags.DEFINE_bool("print_config", False, "Print the resolved config (every field, after overrides, "
                                  "as `field = value`) and exit 0; no validation, no compute.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Validate the config (exit 2 on an error, as a real run), then list "
                             "every model the run would train or reuse (role, seed, fingerprint, whether it is in "
                             "the model store, the splits and files it reads) and exit 0. Loads the data and the "
                             "tokenizers (and fills the token cache) but no model weights; trains and pretrains "
                             "nothing. --only_check_args stops after parsing the flags: use --dry_run to check a "
                             "config.")
# Multi-process runs (see w2s_jax/distributed.py and launch/); unset flags fall back to W2S_* / JAX_* / SLURM.
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (env W2S_COORDINATOR).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run (env W2S_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0-based (env W2S_PROCESS_ID).")
_LOCAL_DEVICES = flags.DEFINE_string("local_device_ids", None,
                                     "Comma-separated local device ids this process uses (env W2S_LOCAL_DEVICE_IDS).")

# stopped with one line on stderr and exit status 2: bad input, unusable paths or disks, a diverging run
USER_ERRORS = (ValueError, OSError, NotImplementedError, FloatingPointError)


def _unknown_override(argv) -> str | None:
    """The first `--config.a.b=v` whose path the config does not have (config_flags only says AttributeError)."""
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None:
        return None
    from w2s_jax.configs import load_config_file

    config = load_config_file(spec)
    for arg in argv:
        if arg.startswith("--config."):
            path = arg[len("--config."):].split("=", 1)[0]
            node = config
            for i, part in enumerate(path.split(".")):
                if not hasattr(node, "keys") or part not in node:
                    return f"config.{path}: unknown field {'.'.join(path.split('.')[:i + 1])!r}"
                node = node[part]
    return None


def _flag_error(argv, e: Exception) -> str:
    """One line for a flag that did not parse: a missing config file, a preset that raised, a bad value."""
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is not None and not os.path.isfile(spec.partition(":")[0]):
        from w2s_jax.config_files import missing_config

        return missing_config(spec)
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if "Error whilst parsing config file" in str(e) and lines:
        return f"--config={spec}: {lines[-1]}"  # the last traceback line: the config's own exception
    return (lines[0] if lines else type(e).__name__).removeprefix("flag --")


def parse_flags(argv):
    from w2s_jax.config_files import missing_config, resolve_config_args

    argv = resolve_config_args(argv)
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is not None and not os.path.isfile(spec.partition(":")[0]):  # config_flags would defer this error
        print(f"error: {missing_config(spec)}", file=sys.stderr)
        sys.exit(2)
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError) as e:
        try:
            message = _unknown_override(argv) or f"could not apply config overrides ({e})"
        except Exception as inner:  # the config file itself does not load
            message = _flag_error(argv, inner)
    except (flags.Error, ValueError, OSError) as e:
        message = _flag_error(argv, e)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def check_workdir(path: str) -> None:
    """Stop before compute when results could not be written to `path`."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise OSError(f"--workdir={path}: cannot write there ({e.strerror or e})") from None


def config_lines(config) -> list[str]:
    """Every field of the resolved config as `field = value` (the form `--config.field=value` takes)."""
    def walk(node, prefix):
        for key in sorted(node.keys()):
            value = node[key]
            if hasattr(value, "keys"):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key} = {value!r}"
    return list(walk(config, ""))


def main(argv) -> None:
    del argv
    if _PRINT_CONFIG.value:
        print("\n".join(config_lines(_CONFIG.value)))
        return
    from w2s_jax import distributed

    if not flags.FLAGS["verbosity"].present:  # orbax logs every save at INFO; keep the console to progress bars
        logging.set_verbosity(logging.WARNING)
    try:  # before anything touches a JAX backend
        distributed.initialize(distributed.resolve(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                                   _LOCAL_DEVICES.value))
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    from w2s_jax import experiments
    from w2s_jax.config_check import validate

    config = _CONFIG.value
    try:
        mesh = validate(config)
        check_workdir(_WORKDIR.value)
        logging.info("mesh %s on %s", dict(mesh.shape), mesh.devices.flat[0].platform)
        if _DRY_RUN.value:
            from w2s_jax.experiments.plan import plan_lines

            plan = experiments.dry_run(config, _WORKDIR.value, mesh)
            if distributed.is_primary():
                print("\n".join(plan_lines(plan)))
            return
        results = experiments.run(config, _WORKDIR.value, mesh, overwrite=_OVERWRITE.value)
    except USER_ERRORS as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        sys.exit(2)
    distributed.sync("run-end")
    if not distributed.is_primary():
        return
    print("\n".join(summary_lines(results)))
    print(f"results: {_WORKDIR.value}/results.json")


def summary_lines(results: dict) -> list[str]:
    """Each model's test accuracy per seed: of the one experiment, or per weak->strong pair of a sweep."""
    groups = [(f"{p['name']}: ", p["runs"]) for p in results["pairs"]] if "pairs" in results else \
        [("", results["runs"])]
    several = len(results["seeds"]) > 1
    return [f"{prefix}{'seed %d: ' % run['seed'] if several else ''}{m['role']:>22}  test accuracy "
            f"{m['test_accuracy']:.4f}" for prefix, runs in groups for run in runs for m in run["models"]]


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split("\n")).strip()
    return text or type(e).__name__


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main, flags_parser=parse_flags)
