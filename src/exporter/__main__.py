"""``python -m exporter``: the same entry point as the ``exporter`` console script."""

from exporter.startup import run

if __name__ == "__main__":
    run()
