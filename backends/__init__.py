"""Device-side executors behind one interface (``base.Backend``); numpy plus each backend's runtime."""
