"""The ``mcu`` target: an MLP receiver adapted by C firmware on a Cortex-M4F, emulated by QEMU (bundle-format.md §16)."""
