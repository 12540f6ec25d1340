"""Everything that trains or runs a network, with no stage's bookkeeping: the training settings, the
networks, augmentation, one model's fit with its checkpoints, the plan of a run's parts and pseudo-labels,
training the parts here or on Ray (the engines), the device and precision, and prediction (with
test-time augmentation). Imports only `pipeline.core`; TensorFlow, Keras and Ray load inside functions.
"""
