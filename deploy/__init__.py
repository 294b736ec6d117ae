"""Host-to-device artefacts: tensor files, bundles, the device-protocol client. numpy only."""
