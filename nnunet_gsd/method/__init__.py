"""Pure, tested GSD-Net method functions (torch; dimension-agnostic; sync-free per step).

Modules: ``selection`` (Eq. 1–6), ``gda`` (Eq. 7–10), ``superpixels`` (SLIC, host side) and ``refinement`` (Eq. 11–14),
``transfer`` (Eq. 15), ``losses`` (Eq. 16–19), ``views`` (weak view x'), ``noise_rate``
(Eq. 20, the networks' confident disagreement), ``diagnostics`` (truth diagnostics, never in the loss),
``calibration`` (boundary calibration, ours), ``soft_labels`` (several raters as soft targets), and
``step`` (one training step, Algorithm 1, composed of the above, and the figures it logs). Nothing is
imported here so that ``import nnunet_gsd.method`` stays cheap.
"""
