"""`python -m w2s_jax.report --workdir=DIR`: rebuild a run's report from its results.json (see `w2s_jax.eval.report`)."""
import sys

from w2s_jax.eval.report import main

if __name__ == "__main__":
    sys.exit(main())
