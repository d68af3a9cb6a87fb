"""Reading a Label Studio labeling config: which RectangleLabels to fill, and which label each model class gets.

A model class ``k`` with name ``n`` maps to the label ``L`` when (case-insensitively) ``n`` equals ``L``, or ``n``
is listed in ``L``'s ``predicted_values`` attribute (``<Label value="Car" predicted_values="car,truck"/>``), or
an explicit mapping ``{n: L}`` says so (the explicit mapping wins).

Example:
    >>> cfg = '<View><Image name="img" value="$image"/><RectangleLabels name="box" toName="img">' \\
    ...       '<Label value="Cat" predicted_values="cat,kitten"/></RectangleLabels></View>'
    >>> parse_label_config(cfg, ("dog", "cat")).class_to_label
    {1: 'Cat'}
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


class LabelConfigError(ValueError):
    """The labeling config cannot be served; the message says how to fix it."""


@dataclass(frozen=True)
class RectangleTarget:
    """Where predictions go: the RectangleLabels control, its image, and the class-to-label map."""

    from_name: str
    to_name: str
    value_key: str
    labels: tuple[str, ...]
    class_to_label: dict[int, str] = field(default_factory=dict)
    unmatched_labels: tuple[str, ...] = ()
    unmatched_classes: tuple[str, ...] = ()

    class_names: tuple[str, ...] = ()

    @property
    def label_to_class(self) -> dict[str, int]:
        """Label -> the model class its human boxes train. When several classes map to one label (``Car`` with
        ``predicted_values="car,truck"``), the class named like the label wins, else the lowest class id."""
        out: dict[str, int] = {}
        for k in sorted(self.class_to_label):
            label = self.class_to_label[k]
            named = k < len(self.class_names) and self.class_names[k].lower() == label.lower()
            if label not in out or named:
                out[label] = k
        return out


def parse_label_config(
    config: str, class_names: tuple[str, ...] | list[str], mapping: dict[str, str] | None = None
) -> RectangleTarget:
    """Find the first RectangleLabels control on an Image and map the model's classes to its labels.

    Raises:
        LabelConfigError: the config does not parse, has no RectangleLabels on an Image, or no label matches
            any model class (the message names the labels and the classes).
    """
    control, obj = _rectangle_control(config)
    labels = tuple(control.labels)
    mapping = {k.lower(): v for k, v in (mapping or {}).items()}
    for cls, lab in mapping.items():
        if lab not in labels:
            raise LabelConfigError(f"label mapping {cls!r} -> {lab!r}: no such label; labels are {list(labels)}")
    aliases = _label_aliases(control, labels)
    class_to_label: dict[int, str] = {}
    for k, name in enumerate(class_names):
        lab = mapping.get(name.lower()) or aliases.get(name.lower())
        if lab:
            class_to_label[k] = lab
    unmatched_labels = tuple(lab for lab in labels if lab not in class_to_label.values())
    unmatched_classes = tuple(n for k, n in enumerate(class_names) if k not in class_to_label)
    if not class_to_label:
        raise LabelConfigError(
            f"no label matches a model class: labels {list(labels)}, model classes {list(class_names)}; "
            'add predicted_values="<class>" to a <Label>, or set LABEL_MAPPING (e.g. {"car": "Vehicle"})'
        )
    if unmatched_labels:
        log.warning("labels with no model class (never predicted): %s", ", ".join(unmatched_labels))
    return RectangleTarget(
        from_name=control.name,
        to_name=control.to_name[0],
        value_key=str(obj.value).lstrip("$"),
        labels=labels,
        class_to_label=class_to_label,
        class_names=tuple(class_names),
        unmatched_labels=unmatched_labels,
        unmatched_classes=unmatched_classes,
    )


def _rectangle_control(config: str):
    """The config's first RectangleLabels control and the Image object it points to (SDK objects)."""
    from label_studio_sdk.label_interface import LabelInterface

    try:
        li = LabelInterface(config)
    except Exception as exc:  # the SDK raises several types for malformed XML
        raise LabelConfigError(f"the labeling config does not parse: {exc}") from None
    controls = [c for c in li.controls if c.tag.lower() == "rectanglelabels"]
    if not controls:
        tags = sorted({c.tag for c in li.controls}) or ["none"]
        raise LabelConfigError(
            "the labeling config has no <RectangleLabels> control (found: " + ", ".join(tags) + "); detector-al "
            'predicts boxes: add <RectangleLabels name="label" toName="image"> with one <Label> per class'
        )
    control = controls[0]
    obj = next((o for o in li.objects if o.name == control.to_name[0]), None)
    if obj is None or obj.tag.lower() != "image" or not str(obj.value).startswith("$"):
        raise LabelConfigError(f'<RectangleLabels name="{control.name}"> must point to an <Image value="$..."> tag')
    return control, obj


def _label_aliases(control, labels: tuple[str, ...]) -> dict[str, str]:
    """Lower-cased class name -> label: each label's own name and its ``predicted_values`` (first label wins)."""
    aliases: dict[str, str] = {}
    for lab in labels:
        tag = control.labels_attrs.get(lab)
        attrs = getattr(tag, "attr", tag) or {}
        for alias in [lab, *str(attrs.get("predicted_values", "")).split(",")]:
            if alias.strip():
                aliases.setdefault(alias.strip().lower(), lab)
    return aliases


def default_label_config(class_names: tuple[str, ...] | list[str]) -> str:
    """A labeling config with one RectangleLabels label per model class (for new projects and import files)."""
    from xml.sax.saxutils import quoteattr

    labels = "\n".join(f"    <Label value={quoteattr(n)}/>" for n in class_names)
    return (
        f'<View>\n  <Image name="image" value="$image" zoom="true"/>\n'
        f'  <RectangleLabels name="label" toName="image">\n{labels}\n  </RectangleLabels>\n</View>\n'
    )
