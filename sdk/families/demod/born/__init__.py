"""Born-machine Bayesian meta-learning of binary neural networks (monograph §6.2.2, §2.4), host side."""
