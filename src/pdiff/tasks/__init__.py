"""The named tasks' parts: the dataset registry (`datasets`), the model registry (`models`) and the presets.

A `Task` (a config with its device and data) is `pdiff.task.Task`; this package holds only what the config
validates against, so that it imports nothing above the config.
"""
