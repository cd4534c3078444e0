"""``python -m exporter``: the same entry point as the ``exporter`` console script."""

from exporter.cli import entry

if __name__ == "__main__":
    entry()
