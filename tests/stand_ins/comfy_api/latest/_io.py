"""``comfy_api.latest.io`` of the stand-in: schemas, inputs and outputs, hidden values, ``ComfyNode`` and
``NodeOutput``, with the V1 view ComfyUI derives from a schema (what ``/object_info`` and the V1 executor read).

The rules mirrored from ComfyUI 0.3.64's ``comfy_api/latest/_io.py``:

- an input's options are its set fields with None left out; a widget's ``default``; ``optional`` decides between
  ``required`` and ``optional`` and is not itself listed;
- a combo is the type ``"COMBO"`` with its ``options`` (and ``multiselect: False``);
- an output's name is its display name, else its type; outputs without an id get ``_<i>_<TYPE>_``;
- an output node asks for the ``prompt`` and ``extra_pnginfo`` hidden values;
- each run calls ``execute`` on a shallow clone of the class whose ``hidden`` holds that run's hidden values;
  ``execute`` may return a ``NodeOutput``, a tuple, a dict (``{"ui", "result"}``) or None.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


def _pruned(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# =============================================================================================== inputs and outputs
class Input:
    """A socket or widget of a node."""

    #: the ComfyType this input belongs to (set by :func:`comfytype`)
    Parent: Any = None

    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 lazy: bool | None = None, extra_dict: dict | None = None) -> None:
        self.id, self.display_name, self.optional = id, display_name, optional
        self.tooltip, self.lazy, self.extra_dict = tooltip, lazy, extra_dict or {}

    @property
    def io_type(self) -> str:
        return self.Parent.io_type

    def as_dict(self) -> dict[str, Any]:
        return _pruned({"display_name": self.display_name, "optional": self.optional, "tooltip": self.tooltip,
                        "lazy": self.lazy}) | _pruned(self.extra_dict)

    def get_io_type(self) -> str:
        return self.io_type


class WidgetInput(Input):
    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 lazy: bool | None = None, default: Any = None, socketless: bool | None = None,
                 widget_type: str | None = None, force_input: bool | None = None, extra_dict: dict | None = None) -> None:
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
        self.default, self.socketless, self.widget_type, self.force_input = default, socketless, widget_type, force_input

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | _pruned({"default": self.default, "socketless": self.socketless,
                                            "widgetType": self.widget_type, "forceInput": self.force_input})

    def get_io_type(self) -> str:
        return self.widget_type if self.widget_type is not None else super().get_io_type()


class Output:
    Parent: Any = None

    def __init__(self, id: str | None = None, display_name: str | None = None, tooltip: str | None = None,
                 is_output_list: bool = False) -> None:
        self.id, self.display_name, self.tooltip, self.is_output_list = id, display_name, tooltip, is_output_list

    @property
    def io_type(self) -> str:
        return self.Parent.io_type


class ComfyTypeIO:
    """A type with an ``Input`` and an ``Output`` class (see :func:`comfytype`)."""

    io_type: str = ""
    Type: Any = Any

    class Input(Input):
        pass

    class Output(Output):
        pass


def comfytype(io_type: str):
    """Bind ``io_type`` to a ComfyType class; its Input and Output get their own copies pointing back to it."""

    def bind(cls: type) -> type:
        if not issubclass(cls, ComfyTypeIO):
            cls = type(cls.__name__, (cls, ComfyTypeIO), {})
        cls.io_type = io_type
        for name in ("Input", "Output"):
            part = getattr(cls, name, None)
            if part is not None:
                copy = type(part.__name__, (part,), {"Parent": cls})
                setattr(cls, name, copy)
        return cls

    return bind


def Custom(io_type: str) -> type[ComfyTypeIO]:  # noqa: N802 - ComfyUI's name
    """A ComfyType for a pack's own socket type."""

    @comfytype(io_type)
    class CustomType(ComfyTypeIO):
        pass

    return CustomType


@comfytype("BOOLEAN")
class Boolean(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                     lazy: bool | None = None, default: bool | None = None, label_on: str | None = None,
                     label_off: str | None = None, socketless: bool | None = None, force_input: bool | None = None) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.label_on, self.label_off = label_on, label_off

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | _pruned({"label_on": self.label_on, "label_off": self.label_off})


class NumberDisplay(str, Enum):
    number = "number"
    slider = "slider"


@comfytype("INT")
class Int(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                     lazy: bool | None = None, default: int | None = None, min: int | None = None,
                     max: int | None = None, step: int | None = None, control_after_generate: bool | None = None,
                     display_mode: NumberDisplay | None = None, socketless: bool | None = None,
                     force_input: bool | None = None) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.min, self.max, self.step = min, max, step
            self.control_after_generate, self.display_mode = control_after_generate, display_mode

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | _pruned({
                "min": self.min, "max": self.max, "step": self.step,
                "control_after_generate": self.control_after_generate,
                "display": self.display_mode.value if self.display_mode else None})


@comfytype("FLOAT")
class Float(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                     lazy: bool | None = None, default: float | None = None, min: float | None = None,
                     max: float | None = None, step: float | None = None, round: float | None = None,
                     display_mode: NumberDisplay | None = None, socketless: bool | None = None,
                     force_input: bool | None = None) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.min, self.max, self.step, self.round, self.display_mode = min, max, step, round, display_mode

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | _pruned({"min": self.min, "max": self.max, "step": self.step,
                                                "round": self.round, "display": self.display_mode})


@comfytype("STRING")
class String(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                     lazy: bool | None = None, multiline: bool = False, placeholder: str | None = None,
                     default: str | None = None, dynamic_prompts: bool | None = None, socketless: bool | None = None,
                     force_input: bool | None = None) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.multiline, self.placeholder, self.dynamic_prompts = multiline, placeholder, dynamic_prompts

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | _pruned({"multiline": self.multiline, "placeholder": self.placeholder,
                                                "dynamicPrompts": self.dynamic_prompts})


@comfytype("COMBO")
class Combo(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(self, id: str, options: list | type[Enum] | None = None, display_name: str | None = None,
                     optional: bool = False, tooltip: str | None = None, lazy: bool | None = None,
                     default: Any = None, control_after_generate: bool | None = None, upload: Any = None,
                     image_folder: Any = None, remote: Any = None, socketless: bool | None = None) -> None:
            if isinstance(options, type) and issubclass(options, Enum):
                options = [v.value for v in options]
            if isinstance(default, Enum):
                default = default.value
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless)
            self.options, self.control_after_generate = options, control_after_generate
            self.upload, self.image_folder, self.remote = upload, image_folder, remote

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | _pruned({
                "multiselect": False, "options": self.options, "control_after_generate": self.control_after_generate,
                **({self.upload.value: True} if self.upload is not None else {}),
                "image_folder": self.image_folder.value if self.image_folder else None,
                "remote": self.remote.as_dict() if self.remote else None})


def _plain(io_type: str) -> type[ComfyTypeIO]:
    return comfytype(io_type)(type(io_type.title(), (ComfyTypeIO,), {}))


Image, Latent, Conditioning, Clip, Vae, Model, Mask = (
    _plain(t) for t in ("IMAGE", "LATENT", "CONDITIONING", "CLIP", "VAE", "MODEL", "MASK"))


# =============================================================================================== hidden values
class Hidden(str, Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


class HiddenHolder:
    """The hidden values of one run, by attribute (``cls.hidden.unique_id``); one not given reads None."""

    def __init__(self, values: dict | None = None) -> None:
        for hidden in Hidden:
            setattr(self, hidden.name, (values or {}).get(hidden))

    def __getattr__(self, key: str) -> None:
        return None

    @classmethod
    def from_dict(cls, values: dict | None) -> "HiddenHolder":
        return cls(values)


# =============================================================================================== schema
@dataclass
class Schema:
    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list[Input] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    hidden: list[Hidden] | None = None  # None when a schema asks for none, as in ComfyUI
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False

    def validate(self) -> None:
        inputs, outputs = [i.id for i in self.inputs], [o.id for o in self.outputs]
        issues = [f"{kind} ids must be unique, but {[k for k, n in Counter(ids).items() if n > 1]} are not."
                  for kind, ids in (("Input", inputs), ("Output", outputs)) if len(set(ids)) != len(ids)]
        if set(inputs) & set(outputs):
            issues.append(f"Ids must be unique between inputs and outputs, but {set(inputs) & set(outputs)} are not.")
        if issues:
            raise ValueError("\n".join(issues))

    def finalize(self) -> None:
        if self.is_output_node:
            if self.hidden is None:
                self.hidden = []
            for hidden in (Hidden.prompt, Hidden.extra_pnginfo):
                if hidden not in self.hidden:
                    self.hidden.append(hidden)
        for i, output in enumerate(self.outputs):
            if output.id is None:
                output.id = f"_{i}_{output.io_type}_"

    def v1_inputs(self) -> dict[str, dict]:
        found: dict[str, dict] = {"required": {}}
        for i in self.inputs:
            options = i.as_dict()
            options.pop("optional", None)
            found.setdefault("optional" if i.optional else "required", {})[i.id] = (i.get_io_type(), options)
        for hidden in self.hidden or ():
            found.setdefault("hidden", {})[hidden.name] = (hidden.value,)
        return found


# =============================================================================================== nodes
class NodeOutput:
    """What ``execute`` returns: the output values, and optionally what the UI shows (``ui``)."""

    def __init__(self, *args: Any, ui: Any = None, expand: dict | None = None, block_execution: str | None = None) -> None:
        self.args, self.ui, self.expand, self.block_execution = args, ui, expand, block_execution

    @property
    def result(self) -> tuple | None:
        return self.args if self.args else None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NodeOutput":
        return cls(*(data.get("result") or ()), ui=data.get("ui"), expand=data.get("expand"))


class _ClassProperty:
    def __init__(self, getter: Any) -> None:
        self.getter = getter

    def __get__(self, instance: Any, owner: type) -> Any:
        return self.getter(owner)


class ComfyNode:
    """Base of a V3 node: ``define_schema`` and ``execute`` are classmethods; nothing is kept on the class between
    runs (each run gets a clone, with ``hidden`` set)."""

    hidden: HiddenHolder | None = None

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs: Any) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, **kwargs: Any) -> bool | str:
        raise NotImplementedError

    @classmethod
    def fingerprint_inputs(cls, **kwargs: Any) -> Any:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------- the V1 view
    @classmethod
    def GET_SCHEMA(cls) -> Schema:  # noqa: N802 - ComfyUI's names
        schema = cls.define_schema()
        schema.finalize()
        schema.validate()
        return schema

    @classmethod
    def INPUT_TYPES(cls, include_hidden: bool = True) -> dict[str, dict]:  # noqa: N802
        found = cls.GET_SCHEMA().v1_inputs()
        if not include_hidden:
            found.pop("hidden", None)
        return found

    RETURN_TYPES = _ClassProperty(lambda cls: tuple(o.io_type for o in cls.GET_SCHEMA().outputs))
    RETURN_NAMES = _ClassProperty(lambda cls: tuple(o.display_name or o.io_type for o in cls.GET_SCHEMA().outputs))
    OUTPUT_TOOLTIPS = _ClassProperty(lambda cls: tuple(o.tooltip for o in cls.GET_SCHEMA().outputs))
    OUTPUT_IS_LIST = _ClassProperty(lambda cls: tuple(o.is_output_list for o in cls.GET_SCHEMA().outputs))
    CATEGORY = _ClassProperty(lambda cls: cls.GET_SCHEMA().category)
    DESCRIPTION = _ClassProperty(lambda cls: cls.GET_SCHEMA().description)
    OUTPUT_NODE = _ClassProperty(lambda cls: cls.GET_SCHEMA().is_output_node)
    NOT_IDEMPOTENT = _ClassProperty(lambda cls: cls.GET_SCHEMA().not_idempotent)
    FUNCTION = "EXECUTE_NORMALIZED"

    @classmethod
    def EXECUTE_NORMALIZED(cls, *args: Any, **kwargs: Any) -> NodeOutput:  # noqa: N802
        out = cls.execute(*args, **kwargs)
        if out is None:
            return NodeOutput()
        if isinstance(out, NodeOutput):
            return out
        if isinstance(out, tuple):
            return NodeOutput(*out)
        if isinstance(out, dict):
            return NodeOutput.from_dict(out)
        raise TypeError(f"Invalid return type from node: {type(out)}")

    @classmethod
    def PREPARE_CLASS_CLONE(cls, hidden_inputs: dict | None) -> type["ComfyNode"]:  # noqa: N802
        clone = type(cls.__name__, (cls,), {"__module__": cls.__module__, "__doc__": cls.__doc__})
        clone.hidden = HiddenHolder.from_dict(hidden_inputs)
        return clone

