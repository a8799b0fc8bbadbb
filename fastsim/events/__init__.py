"""Plain-numpy event physics shared by ``fastsim`` and ``pwa``.

Imports neither torch nor JAX: reaction and masses, helicity kinematics,
exact phase space, the toy detector, conventional MC and event files.
"""

from .detector import (DEFAULT_DETECTOR, Detector, DetectorCard, DetectorCardError,
                       load_detector_card)
from .io import (EventFileError, EventWriter, atomic_path, reaction_of_file, read_event_metadata, read_events,
                 write_events, write_text_atomic)
from .kinematics import HELICITY_VARIABLES, four_momenta, helicity_variables, two_body_momentum
from .mc import conventional_mc, iter_conventional_mc
from .particles import JPSI_GAMMA_KK, MASSES, Reaction
from .phasespace import PhaseSpace
from .sample import Events

__all__ = [
    "DEFAULT_DETECTOR", "Detector", "DetectorCard", "DetectorCardError", "load_detector_card",
    "EventFileError", "EventWriter", "atomic_path", "reaction_of_file", "read_event_metadata", "read_events", "write_events", "write_text_atomic",
    "HELICITY_VARIABLES", "four_momenta", "helicity_variables", "two_body_momentum",
    "conventional_mc", "iter_conventional_mc",
    "JPSI_GAMMA_KK", "MASSES", "Reaction", "PhaseSpace", "Events",
]
