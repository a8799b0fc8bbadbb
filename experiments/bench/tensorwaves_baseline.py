"""Baseline for benchmarks: the J/psi -> gamma K+ K- intensity built with ComPWA's
ampform (model) + tensorwaves (JAX function, UnbinnedNLL, optimizers).

Importing this module does no work (ampform/qrules/tensorwaves/jax are imported
lazily inside the functions), so it can sit next to our own ``pwa`` code in one
process and both can be timed side by side.

Physics (see ../shared/PHYSICS.md, sections 1-4): J/psi(1S) with M = +-1 (summed
incoherently) -> gamma X, X -> K+ K-, helicity formalism (qrules
``formalism="helicity"``), relativistic Breit-Wigner with energy-dependent width
times Blatt-Weisskopf form factor, meson radius d = 1 GeV^-1
(``RelativisticBreitWignerBuilder(energy_dependent_width=True, form_factor=True)``).

Coupling conventions
--------------------
ampform labels one coefficient per resonance and X helicity lR in {0, 1, 2}
(photon helicity +1; the parity partners lR -> -lR, lg -> -lg share it).
ampform takes the photon as the first daughter of J/psi -> gamma X, so

    C_ampform(R, lR) = (-1)**lR * c_ours(R, lR)

(see /work/shared/reference/README.md). :meth:`TensorwavesModel.to_parameters`
does this conversion.

Notes
-----
* tensorwaves switches JAX to 64-bit (``jax_enable_x64``) when it first
  initialises JAX; this is process-wide.
* ``UnbinnedNLL`` jit-compiles the *intensity* function only; the NLL reduction
  and ``jax.grad`` of it (tensorwaves' ``gradient``) run eagerly around it.
* tensorwaves' optimizers (``Minuit2``, ``ScipyMinimizer``) default to
  ``use_analytic_gradient=False``, i.e. the optimizer's own finite differences.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

INITIAL_STATE = "J/psi(1S)"
FINAL_STATE = ("gamma", "K+", "K-")
MESON_RADIUS = 1.0  # GeV^-1


# --------------------------------------------------------------------------- model
@dataclass
class TensorwavesModel:
    """ampform model + tensorwaves JAX function of the total intensity.

    Attributes:
        resonances: the input list of dicts (name, spin, mass, width).
        reaction: qrules ``ReactionInfo``.
        helicity_model: ampform ``HelicityModel``.
        function: tensorwaves ``ParametrizedBackendFunction`` (JAX, jit) of
            I = sum_{M, lg} |A|^2; call ``function(dataset)``.
        transformer: tensorwaves ``SympyDataTransformer`` (ampform's helicity
            kinematics: four-momenta p0, p1, p2 -> masses and helicity angles).
        parameter_defaults: ampform parameter name -> value (all parameters).
        coupling_names: (resonance name, lR) -> ampform coefficient name.
        mass_names, width_names, radius_names: resonance name -> ampform name.
    """

    resonances: list[dict]
    reaction: Any
    helicity_model: Any
    function: Any
    transformer: Any
    parameter_defaults: dict[str, Any]
    coupling_names: dict[tuple[str, int], str]
    mass_names: dict[str, str]
    width_names: dict[str, str]
    radius_names: dict[str, str]
    build_seconds: dict[str, float] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)  # current concrete values

    def __post_init__(self) -> None:
        if not self.values:
            self.values = dict(self.parameter_defaults)

    # ---- names ---------------------------------------------------------------
    def coupling_parameter_names(self, fix: tuple[str, int] | None = "first") -> list[str]:
        """ampform names of all complex couplings, optionally without the fixed one.

        ``fix="first"`` drops the lR = 0 coupling of the first resonance (the
        overall scale/phase convention), ``None`` keeps all, a (name, lR) tuple
        drops that one.
        """
        keys = list(self.coupling_names)
        if fix == "first":
            fix = (self.resonances[0]["name"], 0)
        return [self.coupling_names[k] for k in keys if k != fix]

    def mass_width_parameter_names(self) -> list[str]:
        out = []
        for res in self.resonances:
            out += [self.mass_names[res["name"]], self.width_names[res["name"]]]
        return out

    # ---- conventions ---------------------------------------------------------
    def to_parameters(
        self,
        couplings: Mapping[str, Mapping[int, complex]] | None = None,
        masses: Mapping[str, float] | None = None,
        widths: Mapping[str, float] | None = None,
        *,
        ampform_convention: bool = False,
    ) -> dict[str, Any]:
        """Parameter dict (ampform names) from per-resonance values.

        ``couplings[name][lR]`` is a complex coupling in *our* convention
        (converted with the factor (-1)**lR), or in ampform's own convention if
        ``ampform_convention=True``. Couplings not given are left out (use
        :meth:`zero_couplings` to switch the rest off).
        """
        pars: dict[str, Any] = {}
        for name, per_l in (couplings or {}).items():
            for l_r, value in per_l.items():
                sign = 1 if ampform_convention else (-1) ** int(l_r)
                pars[self.coupling_names[(name, int(l_r))]] = complex(sign * value)
        for name, value in (masses or {}).items():
            pars[self.mass_names[name]] = float(value)
        for name, value in (widths or {}).items():
            pars[self.width_names[name]] = float(value)
        return pars

    def from_parameters(self, pars: Mapping[str, Any]) -> dict[str, dict[int, complex]]:
        """Inverse of :meth:`to_parameters` for the couplings (our convention)."""
        out: dict[str, dict[int, complex]] = {}
        for (name, l_r), pname in self.coupling_names.items():
            if pname in pars:
                out.setdefault(name, {})[l_r] = complex((-1) ** l_r * pars[pname])
        return out

    def zero_couplings(self) -> dict[str, complex]:
        return {n: 0j for n in self.coupling_names.values()}

    # ---- evaluation ----------------------------------------------------------
    def set_parameters(self, pars: Mapping[str, Any]) -> None:
        """Set (some) parameters by ampform name; the rest keep their values."""
        unknown = set(pars) - set(self.values)
        if unknown:
            raise KeyError(f"unknown parameters: {sorted(unknown)}")
        self.values.update(pars)
        self.function.update_parameters(dict(self.values))

    def reset_parameters(self) -> None:
        self.values = dict(self.parameter_defaults)
        self.function.update_parameters(dict(self.values))

    def intensity(self, dataset: Mapping[str, Any], pars: Mapping[str, Any] | None = None) -> np.ndarray:
        """Intensity per event (numpy array) at the current (or given) parameters."""
        if pars:
            self.set_parameters(pars)
        return np.asarray(self.function(dataset))


def _make_particle_db(resonances: Sequence[dict]):
    """Particle collection with only J/psi, gamma, K+-, and our resonances.

    A resonance found in qrules' PDG database keeps its quantum numbers (name,
    LaTeX) with mass and width replaced; an unknown name becomes an isoscalar
    J^PC = J^++ meson cloned from f(0)(980) / f(2)(1270).
    """
    import attrs
    import qrules
    from qrules.particle import ParticleCollection, Spin  # noqa: F401

    pdg = qrules.load_default_particles()
    db = ParticleCollection()
    for name in (INITIAL_STATE, *FINAL_STATE):
        db.add(pdg[name])
    template = pdg["f(0)(980)"]
    for i, res in enumerate(resonances):
        name, spin = res["name"], int(res["spin"])
        if spin % 2 or spin < 0:
            msg = f"{name}: K+K- resonance needs even spin (J^PC = J^++), got {spin}"
            raise ValueError(msg)
        if name in pdg.names:
            base = pdg[name]
            if int(base.spin) != spin:
                msg = f"{name}: spin {spin} given, PDG says {base.spin}"
                raise ValueError(msg)
            particle = attrs.evolve(base, mass=float(res["mass"]), width=float(res["width"]))
        else:
            particle = attrs.evolve(
                template,
                name=name,
                pid=9_990_000 + i,
                latex=name,
                spin=float(spin),
                mass=float(res["mass"]),
                width=float(res["width"]),
            )
        db.add(particle)
    return db


def build_model(
    resonances: Sequence[dict],
    *,
    backend: str = "jax",
    transformer_backend: str = "jax",
    stable_final_state: bool = False,
) -> TensorwavesModel:
    """Build the ampform model and the tensorwaves function of the intensity.

    Args:
        resonances: list of ``dict(name=..., spin=..., mass=..., width=...)``,
            e.g. ``{"name": "f(2)(1270)", "spin": 2, "mass": 1.2754, "width": 0.1866}``
            (names as in qrules' PDG list, others are created as J^++ isoscalars).
        backend: tensorwaves backend of the intensity function ("jax").
        transformer_backend: backend of the helicity-kinematics transformer.
        stable_final_state: use the PDG masses of gamma, K+- as scalars instead
            of the invariant masses computed from the four-momenta.

    Returns:
        :class:`TensorwavesModel`; couplings all 1+0j, masses/widths as given,
        meson radii 1 GeV^-1.
    """
    import ampform
    import qrules
    from ampform.dynamics.builder import RelativisticBreitWignerBuilder
    from tensorwaves.data import SympyDataTransformer
    from tensorwaves.function.sympy import create_parametrized_function

    t0 = time.perf_counter()
    resonances = [dict(r) for r in resonances]
    names = [r["name"] for r in resonances]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate resonance names: {names}")
    max_spin = max(int(r["spin"]) for r in resonances)
    db = _make_particle_db(resonances)
    reaction = qrules.generate_transitions(
        initial_state=(INITIAL_STATE, [-1, +1]),
        final_state=list(FINAL_STATE),
        allowed_intermediate_particles=names,
        allowed_interaction_types=["strong", "EM"],
        formalism="helicity",
        particle_db=db,
        mass_conservation_factor=None,
        max_angular_momentum=max(2, max_spin),
        max_spin_magnitude=max(2, max_spin),
        number_of_threads=1,
    )
    found = set(reaction.get_intermediate_particles().names)
    if found != set(names):
        msg = f"qrules produced intermediate states {sorted(found)}, wanted {sorted(names)}"
        raise RuntimeError(msg)
    t1 = time.perf_counter()

    builder = ampform.get_builder(reaction)
    if stable_final_state:
        builder.config.stable_final_state_ids = {0, 1, 2}
    bw = RelativisticBreitWignerBuilder(energy_dependent_width=True, form_factor=True)
    for name in names:
        builder.dynamics.assign(name, bw)
    hmodel = builder.formulate()
    t2 = time.perf_counter()

    # parameter names per resonance
    latex = {p.name: (p.latex or p.name) for p in reaction.get_intermediate_particles()}
    defaults = {s.name: v for s, v in hmodel.parameter_defaults.items()}
    coupling_names: dict[tuple[str, int], str] = {}
    mass_names, width_names, radius_names = {}, {}, {}
    for res in resonances:
        name, lx = res["name"], latex[res["name"]]
        mass_names[name] = f"m_{{{lx}}}"
        width_names[name] = Rf"\Gamma_{{{lx}}}"
        radius_names[name] = f"d_{{{lx}}}"
        for l_r in range(0, min(int(res["spin"]), 2) + 1):
            tag = "0" if l_r == 0 else f"+{l_r}"
            pname = (
                Rf"C_{{J/\psi(1S) \to {{{lx}}}_{{{tag}}} \gamma_{{+1}}; "
                Rf"{lx} \to K^{{+}}_{{0}} K^{{-}}_{{0}}}}"
            )
            coupling_names[(name, l_r)] = pname
    for pname in [*coupling_names.values(), *mass_names.values(), *width_names.values(), *radius_names.values()]:
        if pname not in defaults:
            msg = f"expected ampform parameter {pname!r} not in model; have {sorted(defaults)}"
            raise RuntimeError(msg)
    n_coeff = sum(1 for k in defaults if k.startswith("C_"))
    if n_coeff != len(coupling_names):
        raise RuntimeError(f"model has {n_coeff} coefficients, mapped {len(coupling_names)}")
    for res in resonances:  # meson radius d = 1 GeV^-1 (ampform default, made explicit)
        defaults[radius_names[res["name"]]] = MESON_RADIUS
        defaults[mass_names[res["name"]]] = float(res["mass"])
        defaults[width_names[res["name"]]] = float(res["width"])
    sym_defaults = {s: defaults[s.name] for s in hmodel.parameter_defaults}

    expression = hmodel.expression.doit()
    t3 = time.perf_counter()
    function = create_parametrized_function(expression, sym_defaults, backend=backend)
    transformer = SympyDataTransformer.from_sympy(hmodel.kinematic_variables, backend=transformer_backend)
    t4 = time.perf_counter()
    return TensorwavesModel(
        resonances=resonances,
        reaction=reaction,
        helicity_model=hmodel,
        function=function,
        transformer=transformer,
        parameter_defaults=defaults,
        coupling_names=coupling_names,
        mass_names=mass_names,
        width_names=width_names,
        radius_names=radius_names,
        build_seconds={
            "qrules_generate_transitions": t1 - t0,
            "ampform_formulate": t2 - t1,
            "sympy_doit": t3 - t2,
            "tensorwaves_lambdify": t4 - t3,
        },
    )


# ------------------------------------------------------------------------- data
def make_datasets(model: TensorwavesModel, p_gamma, p_kp, p_km) -> dict[str, Any]:
    """Four-momenta (n, 4) = (E, px, py, pz) in the J/psi rest frame -> the
    tensorwaves data sample (masses m_12, ... and helicity angles) that
    ``model.function`` takes. Arrays stay on the JAX device when the
    transformer backend is JAX. ampform's final-state ids: 0 = gamma, 1 = K+,
    2 = K-."""
    momenta = {
        "p0": np.ascontiguousarray(p_gamma, dtype=np.float64),
        "p1": np.ascontiguousarray(p_kp, dtype=np.float64),
        "p2": np.ascontiguousarray(p_km, dtype=np.float64),
    }
    for k, v in momenta.items():
        if v.ndim != 2 or v.shape[1] != 4:
            raise ValueError(f"{k}: expected shape (n, 4), got {v.shape}")
    data = model.transformer(momenta)
    # only what the intensity function takes (drops e.g. the photon mass m_0)
    needed = set(model.function.argument_order)
    return {k: v for k, v in data.items() if k in needed}


# -------------------------------------------------------------------------- NLL
@dataclass
class NLLFunctions:
    estimator: Any  # tensorwaves.estimator.UnbinnedNLL
    free: list[str]
    value: Callable[[Mapping[str, Any]], float]
    gradient: Callable[[Mapping[str, Any]], dict[str, Any]]
    start: dict[str, Any]


def nll_functions(
    model: TensorwavesModel,
    data: Mapping[str, Any],
    mc: Mapping[str, Any],
    free: Sequence[str],
    parameters: Mapping[str, Any] | None = None,
) -> NLLFunctions:
    """tensorwaves UnbinnedNLL (JAX backend) and value/gradient callables.

    ``parameters`` (ampform names; default: the model's current values) fixes
    every parameter not in ``free``. ``value(p)`` / ``gradient(p)`` take a dict
    with (at least) the free parameters; only those are passed on, so the
    gradient is with respect to exactly the free ones. For complex couplings the
    gradient is a complex number (dNLL/dRe + i dNLL/dIm), as tensorwaves returns it.

    NLL = N_data * ln(mean_MC I) - sum_data ln I (tensorwaves' definition,
    equal to PHYSICS.md section 4 with unit weights).
    """
    from tensorwaves.estimator import UnbinnedNLL

    free = list(free)
    unknown = set(free) - set(model.values)
    if unknown:
        raise KeyError(f"unknown parameters: {sorted(unknown)}")
    # model.values holds concrete numbers (the function's own dict may still
    # hold JAX tracers left by a previous jax.grad call)
    model.set_parameters(parameters or {})
    current = dict(model.values)
    estimator = UnbinnedNLL(model.function, dict(data), dict(mc), backend="jax")

    def value(pars: Mapping[str, Any]) -> float:
        return float(estimator({k: pars[k] for k in free}))

    def gradient(pars: Mapping[str, Any]) -> dict[str, Any]:
        grad = estimator.gradient({k: pars[k] for k in free})  # keys in sorted order
        return {k: complex(grad[k]) if np.iscomplexobj(grad[k]) else float(grad[k]) for k in free}

    start = {k: current[k] for k in free}
    return NLLFunctions(estimator=estimator, free=free, value=value, gradient=gradient, start=start)


# ----------------------------------------------------------------------- timing
def _median_times(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def time_nll_and_gradient(
    model: TensorwavesModel,
    data: Mapping[str, Any],
    mc: Mapping[str, Any],
    free: Sequence[str],
    parameters: Mapping[str, Any] | None = None,
    repeats: int = 5,
) -> dict[str, Any]:
    """Seconds for one NLL value and one NLL gradient (tensorwaves, JAX).

    First calls (tracing + XLA compilation) are reported separately from the
    median of ``repeats`` warm calls. Every call is synchronised (the value is
    converted to a Python float, the gradient entries to Python numbers).
    """
    nll = nll_functions(model, data, mc, free, parameters)
    pars = dict(nll.start)
    t = time.perf_counter()
    v0 = nll.value(pars)
    value_first = time.perf_counter() - t
    t = time.perf_counter()
    g0 = nll.gradient(pars)
    grad_first = time.perf_counter() - t
    value_med, value_all = _median_times(lambda: nll.value(pars), repeats)
    grad_med, grad_all = _median_times(lambda: nll.gradient(pars), repeats)
    n_real = sum(2 if np.iscomplexobj(np.asarray(pars[k])) else 1 for k in nll.free)
    return {
        "n_data": int(len(next(iter(data.values())))),
        "n_mc": int(len(next(iter(mc.values())))),
        "n_free_real": n_real,
        "nll": v0,
        "gradient_norm": float(np.sqrt(sum(abs(x) ** 2 for x in g0.values()))),
        "value_first_call_s": value_first,
        "value_median_s": value_med,
        "value_min_s": min(value_all),
        "value_all_s": value_all,
        "gradient_first_call_s": grad_first,
        "gradient_median_s": grad_med,
        "gradient_min_s": min(grad_all),
        "gradient_all_s": grad_all,
        "repeats": repeats,
    }


def _list_gradient_minuit() -> None:
    """Let tensorwaves' Minuit2 pass its analytic gradient to iminuit.

    tensorwaves 0.4.17's ``Minuit2.optimize`` hands iminuit the gradient as
    ``dict_values``, which iminuit 2.33 rejects ("Unable to cast ... dict_values to
    std::vector<double>"). The module's ``iminuit`` is replaced by a namespace whose
    ``Minuit`` turns that gradient into a list; nothing else in the fit changes.
    """
    import types

    import iminuit
    import tensorwaves.optimizer.minuit as tw_minuit

    if getattr(tw_minuit.iminuit, "_list_gradient", False):
        return

    class _Minuit(iminuit.Minuit):
        def __init__(self, fcn, *args, grad=None, **kwargs):
            if grad is not None:
                inner = grad
                grad = lambda pars: list(inner(pars))  # noqa: E731
            super().__init__(fcn, *args, grad=grad, **kwargs)

    tw_minuit.iminuit = types.SimpleNamespace(Minuit=_Minuit, _list_gradient=True)


def _gradient_calls(specifics: Any) -> int | None:
    """Analytic-gradient calls of a finished fit: iminuit's ngrad, scipy's njev."""
    fmin = getattr(specifics, "fmin", None)
    if fmin is not None:
        return int(fmin.ngrad)
    njev = getattr(specifics, "njev", None) if specifics is not None else None
    if njev is None and isinstance(specifics, Mapping):
        njev = specifics.get("njev")
    return None if njev is None else int(njev)


def time_fit(
    model: TensorwavesModel,
    data: Mapping[str, Any],
    mc: Mapping[str, Any],
    free: Sequence[str],
    start: Mapping[str, Any],
    *,
    optimizer: str = "minuit",
    use_analytic_gradient: bool = False,
    repeats: int = 1,
    fixed: Mapping[str, Any] | None = None,
    optimizer_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Time a full fit with a tensorwaves optimizer.

    Args:
        start: start values of the free parameters (ampform names).
        optimizer: "minuit" (``tensorwaves.optimizer.Minuit2``) or "scipy"
            (``ScipyMinimizer``, BFGS by default).
        use_analytic_gradient: tensorwaves' default is False (the optimizer's
            own finite differences); True passes ``jax.grad`` of the NLL (with
            optimizer="minuit" through :func:`_list_gradient_minuit`, which works
            around tensorwaves' gradient hand-over to iminuit).
        repeats: fits from the same start; the median is reported.
        fixed: values of the non-free parameters (default: the model's current).

    Returns a dict with the warm-up (compile) time, the median fit wall time,
    number of NLL calls, the minimum, its validity and the fitted parameters
    (ampform names; complex couplings as [re, im]).
    """
    from tensorwaves.optimizer import Minuit2, ScipyMinimizer

    start = {k: start[k] for k in free}
    nll = nll_functions(model, data, mc, free, {**(fixed or {}), **start})
    t = time.perf_counter()
    nll.value(start)
    if use_analytic_gradient:
        nll.gradient(start)
    warmup = time.perf_counter() - t

    estimator = nll.estimator
    if use_analytic_gradient:
        # tensorwaves 0.4.17 + JAX 0.10: UnbinnedNLL.gradient returns 0-d jax
        # arrays, which ParameterFlattener does not recognise as complex (it
        # checks isinstance(v, complex)), so re/im are not split and the
        # optimizer gets a gradient of the wrong length; and its keys come in
        # jax's sorted order, not the parameters' order. Hand it Python numbers
        # in the parameters' order.
        from tensorwaves.interface import Estimator

        class _PythonNumberGradient(Estimator):
            def __call__(self, parameters):
                return nll.estimator(parameters)

            def gradient(self, parameters):
                # jax.grad returns the dict in sorted-key (pytree) order while the
                # optimizer flattens the parameters in insertion order: reorder.
                grad = nll.estimator.gradient(parameters)
                return {
                    k: complex(grad[k]) if np.iscomplexobj(grad[k]) else float(grad[k])
                    for k in parameters
                }

        estimator = _PythonNumberGradient()
        if optimizer == "minuit":
            _list_gradient_minuit()

    kwargs = dict(optimizer_kwargs or {})
    results, times = [], []
    for _ in range(repeats):
        if optimizer == "minuit":
            opt = Minuit2(use_analytic_gradient=use_analytic_gradient, **kwargs)
        elif optimizer == "scipy":
            opt = ScipyMinimizer(use_analytic_gradient=use_analytic_gradient, **kwargs)
        else:
            raise ValueError(f"unknown optimizer {optimizer!r}")
        t = time.perf_counter()
        res = opt.optimize(estimator, dict(start))
        times.append(time.perf_counter() - t)
        results.append(res)
    best = results[-1]

    def _ser(v):
        v = complex(v) if np.iscomplexobj(np.asarray(v)) else float(v)
        return [v.real, v.imag] if isinstance(v, complex) else v

    return {
        "optimizer": type(opt).__name__,
        "use_analytic_gradient": use_analytic_gradient,
        "n_data": int(len(next(iter(data.values())))),
        "n_mc": int(len(next(iter(mc.values())))),
        "n_free_real": sum(2 if np.iscomplexobj(np.asarray(start[k])) else 1 for k in free),
        "warmup_s": warmup,
        "fit_median_s": statistics.median(times),
        "fit_all_s": times,
        "function_calls": int(best.function_calls),
        "iterations": None if best.iterations is None else int(best.iterations),
        "gradient_calls": _gradient_calls(best.specifics) if use_analytic_gradient else 0,
        "minimum_valid": bool(best.minimum_valid),
        "nll_min": float(best.estimator_value),
        "nll_start": float(nll.value(start)),
        "parameters": {k: _ser(v) for k, v in best.parameter_values.items()},
    }
