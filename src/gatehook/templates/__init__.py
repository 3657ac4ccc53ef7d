"""Platform templates: native actions with a config form (JSON Schema)."""

from gatehook.templates.base import Template, TemplateConfig
from gatehook.templates.registry import TemplateRegistry, default_registry

__all__ = ["Template", "TemplateConfig", "TemplateRegistry", "default_registry"]
