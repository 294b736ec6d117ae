"""The ``metaedge`` command line. Imports stay lazy: device-side commands never load torch."""
