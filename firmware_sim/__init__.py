"""The simulated edge device: flash with A/B slots, boot state machine, protocol server, frame loop."""
