"""invoke: the invoke> dream shell for Stable Diffusion models, on diffusers.

Only the version lives here: `invoke --help` must not pay for importing torch.
"""

__version__ = "0.1.0"
