"""The chain's stages, one module each (download, prepare, split, train, predict, report): each declares
one run of itself (inputs, parameters, outputs, and one call into core, training, competition or report)
for `pipeline.core.stage.run`. `chain` alone knows their order (`make all`).
"""
