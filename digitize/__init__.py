"""The `digitize` application: command line and configuration around the pipeline."""
