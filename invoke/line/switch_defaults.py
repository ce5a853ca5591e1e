"""What a switch means where the line leaves part of it unsaid: facts of the command language.

Settings needs them to resolve a line, outputs to record a resolved line and to read other tools'
lines back; neither owns them, so both import them from here (outputs imports no settings). They
belong with the switch table.
"""

from __future__ import annotations

# --outcrop's strength when the line gives no -f: InvokeAI's outcrop ran img2img at 0.90. On the
# shipped model 0.75 and 0.9 both fill a background well (1.0 drew 1-2% off-colour pixels); the
# new area starts from the edge pixels stretched outwards, which 0.9 mostly repaints.
OUTCROP_STRENGTH = 0.9

# --refiner's hand-off point when the line gives no --refiner_start: the fraction of the schedule
# the SDXL base runs, as diffusers' guide and A1111's "Refiner switch at" default have it.
REFINER_START = 0.8

# The hub's Stable Diffusion upscalers, by -U factor: what -U uses unless --upscaler names another.
UPSCALER_REPOS = {
    2: "stabilityai/sd-x2-latent-upscaler",
    4: "stabilityai/stable-diffusion-x4-upscaler",
}
