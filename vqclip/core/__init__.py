"""What every layer shares and nothing in it builds a model: the config and its presets, the
prompt grammar, the limits, safe reading and atomic writing of files and images, plugins."""
