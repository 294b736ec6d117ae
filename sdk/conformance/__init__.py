"""A conformance suite for runtimes of the MetaEdge bundle format and device protocol (spec 1.3): cases generated
deterministically (``cases``), written and read as files (``suite``), and played against any device that speaks the
management protocol (``runner``)."""
