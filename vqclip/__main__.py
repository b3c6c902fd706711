from vqclip.frontends.cli import run

run()
