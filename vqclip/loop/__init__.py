"""One optimisation or sampling step and its parts: generators, cutouts, perceptors, the
objective's terms, optimisers and the diffusion sampler. Nothing here writes or prints."""
