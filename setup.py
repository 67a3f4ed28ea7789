from setuptools import find_packages, setup

setup(
    name="w2s_jax",
    version="0.1.0",
    description="Weak-to-strong generalization and deception experiments in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # configs/*.py install as w2s_jax/configs_files/ (w2s_jax.config_files.configs_dir() finds them)
    packages=find_packages(include=["w2s_jax", "w2s_jax.*"]) + ["w2s_jax.configs_files"],
    package_dir={"w2s_jax.configs_files": "configs"},
    package_data={"w2s_jax.configs_files": ["*.py"]},
    install_requires=[
        "jax>=0.7,<0.12",
        "flax>=0.11,<0.14",
        "optax>=0.2.4,<0.4",
        "orbax-checkpoint>=0.11,<0.14",
        "ml-collections>=1.0,<2",
        "absl-py>=2.0,<3",
        "transformers>=4.56,<6",
        "datasets>=3.0,<6",
        "pyarrow>=15,<27",  # Parquet splits (data/readers.py); datasets needs it too
        "safetensors>=0.4.3,<1",
        "tokenizers>=0.20,<1",
        "numpy>=1.26,<3",
        "tqdm>=4.66,<5",
        "matplotlib>=3.8,<4",
        "scipy>=1.11,<2",
        "tensorboardX>=2.6,<3",
    ],
    extras_require={
        "cuda12": ["jax[cuda12]>=0.7,<0.12"],
        # torch is only the PyTorch reference of the parity tests; the range admits the CPU
        # wheel 2.13.0 (see README for GPU hosts).
        # peft: the LoRA adapter export test; filelock: runs shared by the test workers (tests/shared_runs.py)
        "test": ["pytest>=8,<10", "pytest-xdist>=3.6,<4", "torch>=2.4,<=2.13.0", "gguf>=0.10,<1",
                 "peft>=0.21,<0.22", "accelerate>=1.0,<2", "filelock>=3.12,<4"],
        "gguf": ["gguf>=0.10,<1", "accelerate>=1.0,<2", "torch>=2.4,<=2.13.0"],
    },
)
