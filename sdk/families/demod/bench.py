"""The algorithm benchmark's budget: one common configuration, with each algorithm's own rate and steps."""

from __future__ import annotations


def train_config(algo: str, iterations: int, pilots_min: int, seed: int, quick: bool):
    """The common budget, with the algorithm's own rate and steps where its recipe needs them."""
    from metaedge.sdk.families.demod.recipes import recipe
    from metaedge.sdk.families.demod.training import TrainConfig

    own = recipe(algo)
    fields = {
        **own,
        "algo": algo,
        "iterations": iterations,
        "tasks_per_batch": 16,
        "inner_steps": max(own["inner_steps"], 2),
        "pilots_min": pilots_min,
        "seed": seed,
        "val_every": max(iterations // 8, 1),
        "patience": 8,
    }
    if quick:
        fields.update(
            tasks_per_batch=2,
            meta_devices=8,
            val_devices=2,
            hidden=(4,),
            particles=2,
            modules=2,
            proposals=3,
            samples=1,
            es_directions=2,
            solver_steps=2,
        )
    return TrainConfig(**fields)
