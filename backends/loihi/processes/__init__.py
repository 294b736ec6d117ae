"""Lava processes of the spiking receiver (see error_lif)."""
