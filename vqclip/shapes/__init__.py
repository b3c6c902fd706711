"""The shapes world: a seeded data set, a tiny VQGAN and CLIP trained on it, and a judge."""
