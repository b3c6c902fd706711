"""The shapes world, a plugin: a seeded data set, a tiny VQGAN and CLIP trained on it, an image
prior, a judge, and the settings measured for them (:mod:`vqclip.shapes.plugin`)."""
