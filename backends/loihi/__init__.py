"""Loihi backend: spiking receivers that adapt on-chip with a three-factor rule (§6.1), run in Lava."""
