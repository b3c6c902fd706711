"""What a user touches: the command line, the notebook's calls, the local web page and the forms
they share. The only layer that prints, exits or serves."""
