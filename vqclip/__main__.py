from vqclip.cli import run

run()
