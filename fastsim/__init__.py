"""fastsim: conventional MC and a normalizing-flow fast simulator (PyTorch).

The numpy parts (``fastsim.events``) import without torch; the learning
parts are imported lazily so that ``import fastsim`` stays cheap.
"""

__version__ = "0.1.0"
