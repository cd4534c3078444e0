# Config package: installed as exporter.conf (see pyproject.toml).
