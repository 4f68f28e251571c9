"""The perfusion Transformer (Zeng et al. 2025) in torch, without nipype.

Modules
-------
model      the network, its normalisation and the torch trapezoidal convolution
loss       the training loss (paper eq. 2)
weights    safetensors weights (shipped in ctp_nipype/data/), offline loading
inference  ``estimate_curves``: numpy in, maps and curves out
training   ``ctp-train``: recipes, streaming simulated batches, checkpoints, log
finetune   ``ctp-finetune``: unlabelled adaptation of the residue head
"""
