"""What a job is asked to do, read and checked before anything is built: the schema dataclasses and
enums, the value checks, the task spec and declared input specs, the build key, a Hugging Face
model folder's config.json, the environment overrides (``EXPORTER_*``). Imports no torch."""
