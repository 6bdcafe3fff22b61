"""The panel's settings without Qt: the engine options a run gets, and the choices kept between sessions.

The panel's parameters (a parameter node, or anything with its attribute names) become one
``EngineOptions`` here and nowhere else: the slider's percent turns into the engine's fraction, and
the keep-noise box into the model's own keep-noise, scaled to the kernel (checked), or none (0 HU:
maximum denoising), and *Adapt to this
scan* into the adaptation budget (unchecked: none). ``SessionSettings`` is
the parameter pack Slicer remembers between sessions (in its QSettings, or any object with
``contains``/``value``/``setValue``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..engine.options import EngineOptions

SETTINGS_GROUP = "LDCTDenoise"


def engine_options(parameters) -> EngineOptions:
    """The run's options from the panel's parameters (validated by ``EngineOptions``)."""
    return EngineOptions(device=parameters.device, batch_size=parameters.batchSize or None,
                         precision=parameters.precision, runtime=parameters.runtime, compile=parameters.compile,
                         strength=parameters.strength / 100.0, keep_noise_hu=None if parameters.keepNoise else 0.0,
                         kernel=parameters.kernel, self_ensemble=int(parameters.selfEnsemble),
                         adapt_minutes=parameters.adaptMinutes if parameters.adaptToScan else 0.0)


@dataclass
class SessionSettings:
    """The panel's choices that outlive a session: device, model, and the advanced engine settings."""

    device: str = "auto"
    model: str = "default"
    weightsPath: str = ""
    precision: str = "auto"
    runtime: str = "auto"
    compile: str = "auto"
    selfEnsemble: str = "1"

    @classmethod
    def fromParameters(cls, parameters) -> SessionSettings:
        return cls(**{name: str(getattr(parameters, name)) for name in cls._names()})

    def applyTo(self, parameters) -> None:
        """Set the parameters; a value this version no longer offers keeps the parameter's own."""
        for name in self._names():
            try:
                setattr(parameters, name, getattr(self, name))
            except ValueError:
                pass

    @classmethod
    def fromSettings(cls, store) -> SessionSettings:
        """The kept values (absent ones at their defaults)."""
        kept = {name: str(store.value(cls._key(name))) for name in cls._names() if store.contains(cls._key(name))}
        return cls(**kept)

    def toSettings(self, store) -> None:
        for name in self._names():
            store.setValue(self._key(name), getattr(self, name))

    @staticmethod
    def _key(name: str) -> str:
        return f"{SETTINGS_GROUP}/{name}"

    @classmethod
    def _names(cls) -> list[str]:
        return [spec.name for spec in dataclasses.fields(cls)]
