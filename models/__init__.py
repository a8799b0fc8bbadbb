"""The shipped defaults of pwa-fastsim, installed as the package ``pwa_fastsim_models``.

Not code: this folder holds the model cards (``*.yaml``), the default detector card
(``detector/besiii_like.yaml``) and the default flow (``flow_besiii_like.pt`` with its
``.metrics.json``). pyproject.toml maps it to an importable package so that an installed
wheel carries them; find a file with ``fastsim.events.resources.shipped("r0.yaml")``.
"""
