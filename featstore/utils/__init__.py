"""Infrastructure shared by every layer: content keys, devices, YAML files, validation."""
