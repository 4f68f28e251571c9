"""Physical constants of CT perfusion, with their sources.

Every function that needs one of these takes it as a parameter whose default
is defined here, so that no constant is buried in the code.

* ``KAPPA_H`` -- hematocrit correction factor ``(1 - H_large) / (1 - H_small)``
  (Fieselmann et al. 2011), dimensionless.
* ``RHO`` -- brain tissue density in g/ml (Fieselmann et al. 2011).

With these, the flow-scaled residue function that deconvolution returns is
``K(t) = (rho / kappa_H) * F * r(t)`` in 1/s, where ``F`` is CBF in ml/g/s, and

* CBF [ml/100 g/min] = ``6000 * kappa_H / rho * max(K)``
* CBV [ml/100 g]     = ``100 * kappa_H / rho * integral(C) / integral(Ca)``
* MTT [s]            = ``60 * CBV / CBF`` = ``integral(K) / max(K)``
"""

KAPPA_H = 0.73
RHO = 1.04  # g/ml

#: seconds per minute times 100 g: converts ml/g/s to ml/100 g/min
CBF_UNIT_FACTOR = 6000.0
#: converts ml/g to ml/100 g
CBV_UNIT_FACTOR = 100.0

UNITS = {
    "cbf": "ml/100g/min",
    "cbv": "ml/100g",
    "mtt": "s",
    "tmax": "s",
    "bad": "s",
    "residue": "1/s",
    "localaif": "HU",
    "ttp": "s",
    "rcbf": "1",
    "rcbv": "1",
}

#: The perfusion methods, named once: the truncated-SVD family and the network.
SVD_METHODS = ("ssvd", "csvd", "osvd")
NETWORK_METHOD = "transformer"
METHODS = SVD_METHODS + (NETWORK_METHOD,)
#: what the command lines run unless told otherwise
DEFAULT_METHODS = ("osvd", NETWORK_METHOD)
