"""Coverage check (pwa.coverage) on MC of a narrower detector than the data's, as in the issue note.

20,000 data events of the default detector against 400,000 MC events of the same detector, or
of one with charged |cos theta| < 0.8 or < 0.3, for J/psi -> gamma K+ K- and psi(2S) -> K+ K- K+ K-.
Prints one markdown row each: reaction, MC detector, % of data outside the MC's charged
acceptance, % flagged, % flagged by the one-dimensional test, MC against itself, covered, seconds.

    python experiments/coverage/measure.py
"""
import time, jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from fastsim.events import JPSI_GAMMA_KK, Detector, DetectorCard, conventional_mc, load_detector_card
from pwa.card import load_model_card
from pwa.coverage import mc_coverage
det = Detector(load_detector_card("default"))
r0 = load_model_card("models/r0.yaml").reaction.to_reaction()
for name, reaction in (("J/psi -> gamma K+ K-", JPSI_GAMMA_KK), ("psi(2S) -> K+ K- K+ K-", r0)):
    data = conventional_mc(20000, det, reaction=reaction, seed=1)
    for label, card in (("same detector", None), ("charged |cos| < 0.8", {"charged": {"cos_theta_max": 0.8}}),
                        ("charged |cos| < 0.3", {"charged": {"cos_theta_max": 0.3}})):
        mdet = det if card is None else Detector(DetectorCard.model_validate(card))
        mc = conventional_mc(400000, mdet, reaction=reaction, seed=2)
        t = time.perf_counter(); res = mc_coverage(data, mc); dt = time.perf_counter() - t
        p = data.momenta[:, :, 1:]; c = np.abs(p[..., 2] / np.linalg.norm(p, axis=-1))
        charged = [i for i, q in enumerate(reaction.particles) if q != "gamma"]
        lim = 0.93 if card is None else card["charged"]["cos_theta_max"]
        truth = np.mean((c[:, charged] > lim).any(axis=1))
        print(f"| {name} | {label} | {100*truth:.1f} | {100*res.uncovered_fraction:.2f} | {100*res.marginal_fraction:.2f} | {100*res.control_fraction:.3f} | {res.covered} | {dt:.1f} |")
