"""Format plugins, one module per format. The core finds a plugin by format name only."""
from __future__ import annotations

from ..errors import UnprocessableModel
from ..smi import FormatPlugin
from .gguf import GgufPlugin
from .onnx_plugin import OnnxPlugin
from .safetensors_plugin import SafeTensorsPlugin

_PLUGINS: dict[str, FormatPlugin] = {p.format: p for p in (OnnxPlugin(), SafeTensorsPlugin(), GgufPlugin())}


def all_plugins() -> list[FormatPlugin]:
    return list(_PLUGINS.values())


def plugin_for(fmt: str, plugin_id: str | None = None) -> FormatPlugin:
    plugin = _PLUGINS.get(fmt)
    if plugin is None:
        served = ", ".join(sorted(_PLUGINS))
        raise UnprocessableModel(f"the model is {fmt}, and this core has no {fmt} plugin yet (it serves: {served})")
    if plugin_id and plugin_id not in (plugin.id, plugin.format):
        raise UnprocessableModel(
            f"plugin_id {plugin_id!r} cannot load a {fmt} model; the {fmt} plugin is {plugin.id!r}"
        )
    ok, why = plugin.availability()
    if not ok:
        raise UnprocessableModel(f"the {plugin.id} plugin is unavailable: {why}")
    return plugin
