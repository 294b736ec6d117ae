"""Benchmarks that span task families: the meta-training core's speed, the device's latency, the readers under fuzzing.

Product code never imports these modules; the command line and the report do."""
