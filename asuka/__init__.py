"""ASUKA: an MAE prior aligned to a frozen Stable Diffusion inpainting UNet, with an inpainting decoder."""
