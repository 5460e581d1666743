"""A user's own distillation method (`EmbedCosine`) and model (`tiny_cnn`), registered with the
ASKD toolkit through entry points (pyproject.toml) and imported from it like a built-in."""
