"""``python -m exporter``: the same entry point as the ``exporter`` console script."""

from exporter.cli.startup import run

if __name__ == "__main__":
    run()
