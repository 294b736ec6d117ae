"""Host side: task families, models, meta-learning algorithms, training, evaluation, export and the command line (the only package that imports torch)."""
