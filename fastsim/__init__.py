"""fastsim: conventional MC and a normalizing-flow fast simulator (PyTorch).

The numpy parts (``fastsim.events``) import without torch; the learning
parts are imported lazily so that ``import fastsim`` stays cheap.
"""

__version__ = "0.1.0"

# Curated API, imported lazily: ``import fastsim`` does not import torch.
_LAZY = {
    "FastSimulator": "fastsim.generator",
    "build_model": "fastsim.generator",
    "SplineFlow": "fastsim.flow",
    "VAE": "fastsim.vae",
    "CoordinateMap": "fastsim.coords",
    "TrainConfig": "fastsim.training",
    "fit": "fastsim.training",
    "load_simulator": "fastsim.checkpoint",
    "load_checkpoint": "fastsim.checkpoint",
    "save_checkpoint": "fastsim.checkpoint",
    "validate_simulator": "fastsim.validation",
    "CheckpointError": "fastsim.errors",
    "TrainingError": "fastsim.errors",
    "SamplingError": "fastsim.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fastsim' has no attribute {name!r}")
