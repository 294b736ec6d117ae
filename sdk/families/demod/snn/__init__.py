"""Spiking receivers for Loihi: host-side meta-training of the three-factor rule's starting point (§6.1)."""
