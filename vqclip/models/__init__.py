"""Models acquired and built: the registry of named files, the bounded downloader, weights-only
checkpoints, taming's VQGAN and OpenAI's CLIP, OpenCLIP, the diffusion U-Net, image priors and
the speed preparation of instances. Nothing here knows about a run."""
