"""Where things are and what they are set to: settings and their layers, models.yaml, the
LoRA/embedding/ControlNet/upscaler folders and how a line's names are found in them, and what a
model's files say without loading it."""
