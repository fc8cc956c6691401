"""A model made of member ETGNNs, each property taken from one member (``ComposedModel``).

The paper trains one network per property (forces on MD data; Born charges and eps_inf on DFPT data). One trunk
for every head (``ETGNN``) is cheaper, but a trunk trained for conservative forces gives up some tensor accuracy
(models/sio2.md, "Which forces"). A composed model keeps the best of each: e.g. energy and forces from a model
trained for -dE/dr, Born charges and eps_inf from another.

    model = compose({"forces": load_model("md.pt"), "tensors": load_model("sio2.pt")},
                    {"energy": "forces", "forces": "forces",
                     "born_effective_charges": "tensors", "dielectric_tensor": "tensors"})
    save_model(model, "sio2_md.pt")        # one file; load_model and ETGNNCalculator read it as any model

It offers the interface of ``ETGNN`` that the calculator and ``evaluate`` use (``trunk``, ``predict``,
``forward``, ``conservative``, ``config.cutoff`` ...). Each member's trunk runs only when one of its properties
is asked for, so tensors on demand stay on demand: a forces-only MD step runs one trunk. Members must share
species and radii (one graph serves all). Energy and forces come from one member (stress and -dE/dr belong to
the energy they differentiate). A composed model is for prediction: train its members, then compose them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from .graph import GraphBatch
from .model import ETGNN, ETGNNConfig, ModelView, TrunkState, construct

__all__ = ["ComposedConfig", "ComposedModel", "ComposedState", "compose"]


@dataclass(frozen=True)
class ComposedConfig:
    """Members' configs and the member each property comes from.

    Attributes:
        members: ``((name, ETGNNConfig), ...)``; every member's heads are the properties routed to it.
        routes: ``((property, member name), ...)`` in head order.
    """

    members: Tuple[Tuple[str, ETGNNConfig], ...]
    routes: Tuple[Tuple[str, str], ...]

    def __post_init__(self) -> None:
        configs = dict(self.members)
        if len(configs) != len(self.members) or not configs:
            raise ValueError(f"member names must be distinct and at least one: {[n for n, _ in self.members]}")
        route = dict(self.routes)
        for prop, name in self.routes:
            if name not in configs:
                raise ValueError(f"property {prop!r} is routed to {name!r}, which is not a member ({sorted(configs)})")
        for name, cfg in self.members:
            mine = tuple(p for p, n in self.routes if n == name)
            if not mine:
                raise ValueError(f"member {name!r} gives no property; leave it out")
            if set(cfg.heads) != set(mine):
                raise ValueError(f"member {name!r} has heads {list(cfg.heads)} but is routed {list(mine)}")
        first = self.members[0][1]
        for name, cfg in self.members[1:]:
            for attr in ("species", "cutoff", "effective_triplet_cutoff"):
                if getattr(cfg, attr) != getattr(first, attr):
                    raise ValueError(f"members must share {attr} (one graph serves all): {self.members[0][0]!r} has "
                                     f"{getattr(first, attr)}, {name!r} has {getattr(cfg, attr)}")
        if "energy" in route and "forces" in route and route["energy"] != route["forces"]:
            raise ValueError(f"energy ({route['energy']!r}) and forces ({route['forces']!r}) must come from one "
                             "member: -dE/dr and stress belong to the energy they differentiate")

    @cached_property
    def _route(self) -> Dict[str, str]:
        return dict(self.routes)  # property -> member name; read per MD step, built once

    @property
    def species(self) -> Tuple[str, ...]:
        return self.members[0][1].species

    @cached_property
    def heads(self) -> Tuple[str, ...]:
        return tuple(p for p, _ in self.routes)

    @property
    def cutoff(self) -> float:
        return self.members[0][1].cutoff

    @property
    def effective_triplet_cutoff(self) -> float:
        return self.members[0][1].effective_triplet_cutoff

    def member_of(self, prop: str) -> str:
        return self._route[prop]

    def _flag(self, prop: str, flag: str) -> bool:
        return prop in self._route and getattr(dict(self.members)[self._route[prop]], flag)

    @cached_property
    def zero_net_force(self) -> bool:
        """Of the member that gives direct forces (False without one)."""
        return self._flag("forces", "zero_net_force")

    @cached_property
    def bec_asr(self) -> bool:
        """Of the member that gives Born charges (False without one)."""
        return self._flag("born_effective_charges", "bec_asr")

    def to_dict(self) -> dict:
        return {"composed": {"members": {n: c.to_dict() for n, c in self.members}, "routes": dict(self.routes)}}

    @classmethod
    def from_dict(cls, d: dict) -> "ComposedConfig":
        body = d["composed"]
        return cls(members=tuple((n, ETGNNConfig.from_dict(c)) for n, c in body["members"].items()),
                   routes=tuple((p, n) for p, n in body["routes"].items()))


@dataclass
class ComposedState:
    """The batch and the trunk state of each member run so far (members run when a property needs them)."""

    batch: GraphBatch
    members: Dict[str, TrunkState] = dataclasses.field(default_factory=dict)


class ComposedModel(ModelView, nn.Module):
    """Members (``ETGNN``) and the member each property comes from; see the module docstring."""

    config: ComposedConfig

    def __init__(self, config: ComposedConfig) -> None:
        super().__init__()
        self.config = config
        self.members = nn.ModuleDict({name: construct(cfg) for name, cfg in config.members})

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def train(self, mode: bool = True) -> "ComposedModel":
        if mode:
            raise RuntimeError("a composed model is for prediction: train its members, then compose them")
        return super().train(False)

    def _by_member(self, heads: Optional[Sequence[str]]) -> Dict[str, list]:
        names = list(self.heads) if heads is None else list(dict.fromkeys(heads))
        for h in names:
            if h not in self.heads:
                raise KeyError(f"model has no head {h!r}; heads: {list(self.heads)}")
        groups: Dict[str, list] = {}
        for h in names:
            groups.setdefault(self.config.member_of(h), []).append(h)
        return groups

    def trunk(self, batch: GraphBatch, recompute: bool = False) -> ComposedState:
        """Checks the graph's radii; the members' trunks run in ``predict``, for the properties asked."""
        next(iter(self.members.values())).check_radii(batch)
        return ComposedState(batch=batch)

    def predict(self, state: ComposedState, heads: Optional[Sequence[str]] = None) -> Dict[str, torch.Tensor]:
        """Heads ``heads`` (default: all), each from its member; a member's trunk runs once per state."""
        out: Dict[str, torch.Tensor] = {}
        for name, names in self._by_member(heads).items():
            member = self.members[name]
            if name not in state.members:
                state.members[name] = member.trunk(state.batch)
            out.update(member.predict(state.members[name], names))
        return out

    def conservative(self, batch: GraphBatch, stress: bool = True, heads: Optional[Sequence[str]] = None,
                     recompute: bool = False, forces: str = "both") -> Tuple[Dict[str, torch.Tensor], ComposedState]:
        """As ``ETGNN.conservative``: -dE/dr (and stress) from the energy member, the other heads from theirs."""
        if "energy" not in self.heads:
            raise ValueError("conservative forces need a model with an 'energy' head")
        name = self.config.member_of("energy")
        names = list(self.heads) if heads is None else list(dict.fromkeys(["energy", *heads]))
        if forces == "conservative":
            names = [n for n in names if n != "forces"]
        groups = self._by_member(names)
        out, member_state = self.members[name].conservative(batch, stress=stress, heads=groups.pop(name),
                                                            recompute=recompute, forces=forces)
        state = ComposedState(batch=member_state.batch, members={name: member_state})
        with torch.no_grad():
            out.update(self.predict(state, [h for hs in groups.values() for h in hs]))
        return out, state


def compose(members: Mapping[str, ETGNN], routes: Mapping[str, str]) -> ComposedModel:
    """A ``ComposedModel`` of ``members`` (name -> model) giving each property of ``routes`` (property -> member
    name) from that member. Heads a member is not routed are dropped (with the trunk parts only they used).
    Weights are copied, in the dtype of the first member used."""
    unknown = sorted(set(routes.values()) - set(members))
    if unknown:
        raise ValueError(f"routes name member(s) {unknown} that are not given ({sorted(members)})")
    used = {n: m for n, m in members.items() if n in routes.values()}
    for n, m in used.items():
        missing = [p for p, r in routes.items() if r == n and p not in m.heads]
        if missing:
            raise KeyError(f"member {n!r} has no head {missing[0]!r}; heads: {list(m.heads)}")
    config = ComposedConfig(
        members=tuple((n, dataclasses.replace(m.config, heads=tuple(h for h in m.heads if routes.get(h) == n)))
                      for n, m in used.items()),
        routes=tuple(routes.items()))
    model = ComposedModel(config).to(dtype=next(iter(used.values())).dtype)
    for n, m in used.items():
        keep = model.members[n].state_dict().keys()
        model.members[n].load_state_dict({k: v for k, v in m.state_dict().items() if k in keep}, strict=True)
    return model.eval()


def compose_files(takes: Sequence[Tuple[str, Sequence[str]]], output: str, note: str = "") -> ComposedModel:
    """Compose the model files of ``takes`` (``(path, properties)`` each; members ``m1``, ``m2``, ... in that
    order) and save the result to ``output``. Its metadata names each member's file, checksum (the one the file
    carries, verified on load) and own metadata."""
    from .model_file import load_model, save_model  # here: model_file imports this module

    members, routes, sources = {}, {}, {}
    for i, (path, props) in enumerate(takes, 1):
        name = f"m{i}"
        model = load_model(path)
        if not isinstance(model, ETGNN):
            raise ValueError(f"{path}: is a composed model already; take properties from its members' files")
        for p in props:
            if p in routes:
                raise ValueError(f"property {p!r} is taken twice ({sources[routes[p]]['file']} and {path})")
            routes[p] = name
        members[name] = model
        sources[name] = {"file": str(path), "checksum": model.checksum, "properties": list(props),
                         "metadata": model.metadata}
    model = compose(members, routes)
    model.metadata = {"composed_from": sources, "note": note}
    save_model(model, output, metadata=model.metadata)
    return model
