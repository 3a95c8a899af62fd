"""Infrastructure shared by every layer: content keys, devices, YAML files, parameter
validation (validation.py), whole-or-nothing file writes (atomic.py), checks that an
output path can be written (outputs.py), registries and retries."""
