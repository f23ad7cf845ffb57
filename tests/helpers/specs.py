"""Small search specs shared by the tests: scikit-learn digits at 16 px, tiny timm students."""

VIT = {"model": "vit_tiny_patch16_224", "kwargs": {"patch_size": 4, "embed_dim": 48, "depth": 4, "num_heads": 2}}
MIXER = {"model": "MlpMixer", "kwargs": {"patch_size": 4, "num_blocks": 2, "embed_dim": 48}}
TEACHER = {"model": "resnet10t", "recipe": {"epochs": 4, "batch_size": 64}}
SPEC = {
    "name": "digits-search",
    "seed": 0,
    "data": {"dataset": "digits", "image_size": 16},
    "pairs": [{"teacher": TEACHER, "student": VIT}, {"teacher": TEACHER, "student": MIXER}],
    "distill": {
        "stages": {"choices": [[1, 2, 3, 4], [3, 4], [4]]},
        "eps": {"low": 1.0, "high": 1.5},
        "temperature": {"low": 1.0, "high": 3.0},
    },
    "optim": {"lr": {"low": 1e-3, "high": 5e-3, "log": True}, "epochs": 3, "batch_size": 64},
    # one trial at a time: ASHA sees results in a fixed order, so its decisions are reproducible
    # grace: after the warm-up; the two cheapest baselines (the shared finished search runs all four)
    "search": {"num_samples": 6, "reduction_factor": 2, "max_concurrent": 1, "baselines": ["none", "kd"]},
}
ALL_BASELINES = ["none", "kd", "dkd", "dist"]

# One train config: a ViT student distilled from a ResNet-10t teacher on digits.
CONFIG = {
    "name": "digits-test",
    "data": {"dataset": "digits", "image_size": 16},
    "pairs": [{"teacher": {"model": "resnet10t", "recipe": {"epochs": 4, "batch_size": 64}}, "student": VIT}],
    "distill": {"method": "ofa", "eps": 1.2, "stages": [2, 3, 4]},
    "optim": {"name": "adamw", "lr": 2e-3, "epochs": 6, "batch_size": 32, "warmup_epochs": 1},
}
