"""A run around the loop: building the parts from a config, the driver (frames, state, resume,
Ctrl-C), stories and zooms, restyled videos, run directories, MP4s and upscaling."""
