"""Qiskit backend: Born machines whose measured bitstrings are a binary network's weights (§6.2.2)."""
