"""Host side: task families, the meta-learning core and algorithms, exporters, benchmarks and the command line
(the only package that imports torch)."""
