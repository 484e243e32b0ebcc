"""The widget's keyboard shortcuts, working whatever layer is active.

napari looks a key up in the active layer's keymap before the viewer's, and its layers use S, A,
P, T and Esc for their own tools. So the keys are bound on the viewer (for every other layer) and on
the plugin's own layers (clicks, boxes, masks), where they take over from napari's layer keys — except
Esc, which outside a run still does what the layer does with it (finish a shape, drop a polygon).
Everything bound is unbound again, and what it replaced restored, when the dock closes.
"""
from __future__ import annotations

from typing import Callable

from napari.utils.key_bindings import coerce_keybinding

CANCEL_KEY = "Escape"
#: key -> (what it does, for the help text)
SHORTCUTS = {"t": "toggle +/− clicks", "n": "next object", "s": "segment this frame",
             "Shift-S": "propagate", "a": "audio only", CANCEL_KEY: "cancel the run"}


def _layer_default(layer, key: str) -> None:
    """Run what napari's own keymap of the layer's class binds to `key`, if anything."""
    combo = coerce_keybinding(key)
    for cls in type(layer).__mro__:
        func = getattr(cls, "class_keymap", {}).get(combo)
        if func is not None:
            func(layer)
            return


class Shortcuts:
    """Binds `actions` (key -> callable) on a viewer and on chosen layers; `release` undoes it all."""

    def __init__(self, viewer, actions: dict[str, Callable[[], None]], running: Callable[[], bool]) -> None:
        self.viewer = viewer
        self.actions = actions
        self.running = running
        self.bound: list[tuple[object, str, object]] = []  # (provider, key, what it replaced)
        for key, action in actions.items():
            self._bind(viewer, key, lambda _viewer, action=action: action())

    def bind_layer(self, layer) -> None:
        """Bind the keys on one of the plugin's layers (idempotent)."""
        if any(provider is layer for provider, _, _ in self.bound):
            return
        for key, action in self.actions.items():
            if key == CANCEL_KEY:
                handler = lambda lay, action=action: action() if self.running() else _layer_default(lay, CANCEL_KEY)  # noqa: E731
            else:
                handler = lambda _lay, action=action: action()  # noqa: E731
            self._bind(layer, key, handler)

    def _bind(self, provider, key: str, handler) -> None:
        previous = provider.keymap.get(coerce_keybinding(key))
        provider.bind_key(key, handler, overwrite=True)
        self.bound.append((provider, key, previous))

    def release(self) -> None:
        for provider, key, previous in reversed(self.bound):
            provider.bind_key(key, None)
            if previous is not None:
                provider.bind_key(key, previous, overwrite=True)
        self.bound.clear()
