"""The one training loop and what it needs: teachers, the logit cache, costs, artefacts, ``ofasearch train``."""
