"""The HTTP surface of the control plane."""
