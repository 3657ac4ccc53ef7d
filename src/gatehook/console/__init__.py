"""The web console (``gatehook console``): pages over the management API."""
