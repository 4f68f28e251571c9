"""Simulators, kept apart from the estimators (as dipy keeps ``dipy/sims``).

Modules
-------
simulate   tissue curves from the indicator-dilution model (the network's training draws)
testsets   the paper's six test sets
phantom    the digital brain phantom (4D HU scans with known maps)
synthetic  small synthetic scans for tests and benchmarks
osipi      OSIPI's DSC digital reference object (vendored in ctp_nipype/data/osipi-dsc-dro/) and our estimates on it
"""
