"""Functional models: parameters are a flat dict of tensors so that vmap, grad and export can trace them.

Each model module defines its own loss; the task family that uses a model passes that loss to the
meta-learner explicitly (``InnerLoop.loss``)."""
