"""What the tests share: small specs, log capture, background drivers, checkpoint and rebuild checks."""
