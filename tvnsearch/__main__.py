from tvnsearch.cli import run

run()
