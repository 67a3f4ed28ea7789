"""w2s_jax: weak-to-strong generalization and deception experiments in JAX/Flax."""

__version__ = "0.1.0"
