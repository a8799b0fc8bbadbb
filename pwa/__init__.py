"""``pwa``: unbinned partial-wave analysis of any reaction of two-body decay chains, in JAX.

Build once, apply many times::

    import jax
    jax.config.update("jax_enable_x64", True)   # the entry point's job
    from pwa import Model, load_model_card
    model = Model.from_card(load_model_card("models/jpsi_gamma_kk.yaml"))
    data, mc = model.precompute(data_events), model.precompute(mc_events)
    p0 = model.initial_values()
    value = jax.jit(model.nll)(p0, data, mc)

Never imports torch; ``fastsim.events`` (plain numpy) supplies the events.
"""

from .amplitude import SPIN_STATES, Model, require_x64
from .card import ModelCard, ResonanceCard, load_model_card, parse_model_card
from .helicity import HelicityAmplitude
from .errors import FitError, GenerationError, ModelCardError, PrecisionError
from .fractions import (FitFractions, fit_fractions_mc, fit_fractions_quadrature, phase_space_quadrature,
                        phase_space_term_integrals)
from .lineshapes import LINESHAPES, LineshapeContext, LineshapeType, register_lineshape
from .wigner import wigner_D_conj, wigner_small_d
from .caches import EventCache, NormalisationCache
from .fit import fit, significances
from .fit_result import FitConfig, FitResult, Significance
from .normalisation import normalisation_cache
from .problem import FitProblem, PortableProblem
from .optimize import OPTIMIZERS, Minimizer, minimize, propagate, register_optimizer
from .parallel import EXECUTORS, map_tasks
from .scans import lasso_scan, scan_fraction

__all__ = [
    "Model", "SPIN_STATES", "require_x64", "HelicityAmplitude", "EventCache", "NormalisationCache",
    "ModelCard", "ResonanceCard", "load_model_card", "parse_model_card",
    "FitError", "GenerationError", "ModelCardError", "PrecisionError",
    "FitFractions", "fit_fractions_mc", "fit_fractions_quadrature", "phase_space_quadrature",
    "phase_space_term_integrals",
    "LINESHAPES", "LineshapeContext", "LineshapeType", "register_lineshape",
    "wigner_D_conj", "wigner_small_d",
    "FitConfig", "FitProblem", "FitResult", "PortableProblem", "Significance", "fit", "normalisation_cache",
    "significances",
    "OPTIMIZERS", "Minimizer", "minimize", "propagate", "register_optimizer",
    "EXECUTORS", "map_tasks", "lasso_scan", "scan_fraction",
]
