"""Ray: starting or joining an instance, and the one TorchTrainer factory."""
