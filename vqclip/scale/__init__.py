"""Running on more than one process: torch.distributed ranks sharing a step's cutouts, a Ray
cluster restyling a video's frames, and sweeps of many runs. Frontends hand these in."""
