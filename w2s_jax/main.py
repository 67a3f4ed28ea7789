"""Entry point: python -m w2s_jax.main --config=configs/rm_helpful.py[:demo] --workdir=DIR [--config.a.b=v]."""
from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (a preset after ':').",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "workdir", "Directory for checkpoints, logs and results.")

USER_ERRORS = (ValueError, FileNotFoundError, NotImplementedError)


def main(argv) -> None:
    del argv
    from w2s_jax import pipeline
    from w2s_jax.config_check import validate

    if not flags.FLAGS["verbosity"].present:  # orbax logs every save at INFO; keep the console to progress bars
        logging.set_verbosity(logging.WARNING)
    config = _CONFIG.value
    try:
        mesh = validate(config)
        logging.info("mesh %s on %s", dict(mesh.shape), mesh.devices.flat[0].platform)
        results = pipeline.run(config, _WORKDIR.value, mesh)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    for m in results["models"]:
        print(f"{m['role']:>22}  test accuracy {m['test_accuracy']:.4f}")
    print(f"results: {_WORKDIR.value}/results.json")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
