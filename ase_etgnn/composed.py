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
the energy they differentiate). Any other property may come from several members: the model gives their mean
(an ensemble in one file; e.g. Born charges and eps_inf as the mean of tensor members trained from different
seeds, ``compose_files(..., average=True)``, ``etgnn compose --average``). A composed model is for prediction:
train its members, then compose them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

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
        routes: ``((property, member name), ...)`` in head order; a property routed to several members is
            their mean (not energy and forces).
    """

    members: Tuple[Tuple[str, ETGNNConfig], ...]
    routes: Tuple[Tuple[str, str], ...]

    def __post_init__(self) -> None:
        configs = dict(self.members)
        if len(configs) != len(self.members) or not configs:
            raise ValueError(f"member names must be distinct and at least one: {[n for n, _ in self.members]}")
        for prop, name in self.routes:
            if name not in configs:
                raise ValueError(f"property {prop!r} is routed to {name!r}, which is not a member ({sorted(configs)})")
        if len(set(self.routes)) != len(self.routes):
            raise ValueError(f"a property is routed to the same member twice: {list(self.routes)}")
        route = self._route
        for prop in ("energy", "forces"):
            if len(route.get(prop, ())) > 1:
                raise ValueError(f"{prop} must come from one member, not the mean of {list(route[prop])}: -dE/dr "
                                 "and stress belong to the energy they differentiate")
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
            raise ValueError(f"energy ({route['energy'][0]!r}) and forces ({route['forces'][0]!r}) must come from "
                             "one member: -dE/dr and stress belong to the energy they differentiate")
        for prop, names in route.items():
            for flag in ("bec_asr", "zero_net_force"):
                if len({getattr(configs[n], flag) for n in names}) > 1:
                    raise ValueError(f"the members averaged for {prop!r} ({list(names)}) differ in {flag}")

    @cached_property
    def _route(self) -> Dict[str, Tuple[str, ...]]:
        out: Dict[str, Tuple[str, ...]] = {}  # property -> member names; read per MD step, built once
        for prop, name in self.routes:
            out[prop] = out.get(prop, ()) + (name,)
        return out

    @property
    def species(self) -> Tuple[str, ...]:
        return self.members[0][1].species

    @cached_property
    def heads(self) -> Tuple[str, ...]:
        return tuple(self._route)

    @property
    def cutoff(self) -> float:
        return self.members[0][1].cutoff

    @property
    def effective_triplet_cutoff(self) -> float:
        return self.members[0][1].effective_triplet_cutoff

    def members_of(self, prop: str) -> Tuple[str, ...]:
        """The members ``prop`` comes from (their mean when several)."""
        return self._route[prop]

    def _flag(self, prop: str, flag: str) -> bool:
        return prop in self._route and getattr(dict(self.members)[self._route[prop][0]], flag)

    @cached_property
    def zero_net_force(self) -> bool:
        """Of the member that gives direct forces (False without one)."""
        return self._flag("forces", "zero_net_force")

    @cached_property
    def bec_asr(self) -> bool:
        """Of the member that gives Born charges (False without one)."""
        return self._flag("born_effective_charges", "bec_asr")

    def to_dict(self) -> dict:
        routes = {p: n[0] if len(n) == 1 else list(n) for p, n in self._route.items()}
        return {"composed": {"members": {n: c.to_dict() for n, c in self.members}, "routes": routes}}

    @classmethod
    def from_dict(cls, d: dict) -> "ComposedConfig":
        body = d["composed"]
        return cls(members=tuple((n, ETGNNConfig.from_dict(c)) for n, c in body["members"].items()),
                   routes=tuple((p, n) for p, ns in body["routes"].items()
                                for n in ([ns] if isinstance(ns, str) else ns)))


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
            for member in self.config.members_of(h):
                groups.setdefault(member, []).append(h)
        return groups

    def trunk(self, batch: GraphBatch, recompute: bool = False) -> ComposedState:
        """Checks the graph's radii; the members' trunks run in ``predict``, for the properties asked."""
        next(iter(self.members.values())).check_radii(batch)
        return ComposedState(batch=batch)

    def predict(self, state: ComposedState, heads: Optional[Sequence[str]] = None) -> Dict[str, torch.Tensor]:
        """Heads ``heads`` (default: all), each from its member or the mean of its members; a member's trunk
        runs once per state."""
        total: Dict[str, torch.Tensor] = {}
        count: Dict[str, int] = {}
        for name, names in self._by_member(heads).items():
            member = self.members[name]
            if name not in state.members:
                state.members[name] = member.trunk(state.batch)
            for key, value in member.predict(state.members[name], names).items():
                total[key] = value if key not in total else total[key] + value
                count[key] = count.get(key, 0) + 1
        return {k: v / count[k] if count[k] > 1 else v for k, v in total.items()}

    def conservative(self, batch: GraphBatch, stress: bool = True, heads: Optional[Sequence[str]] = None,
                     recompute: bool = False, forces: str = "both") -> Tuple[Dict[str, torch.Tensor], ComposedState]:
        """As ``ETGNN.conservative``: -dE/dr (and stress) from the energy member, the other heads from theirs."""
        if "energy" not in self.heads:
            raise ValueError("conservative forces need a model with an 'energy' head")
        name = self.config.members_of("energy")[0]
        names = list(self.heads) if heads is None else list(dict.fromkeys(["energy", *heads]))
        if forces == "conservative":
            names = [n for n in names if n != "forces"]
        groups = self._by_member(names)
        mine = groups.pop(name)
        out, member_state = self.members[name].conservative(batch, stress=stress, heads=mine,
                                                            recompute=recompute, forces=forces)
        state = ComposedState(batch=member_state.batch, members={name: member_state})
        with torch.no_grad():  # the other members' heads, and the means the energy member takes part in
            out.update(self.predict(state, [h for h in names if h not in mine or len(self.config.members_of(h)) > 1]))
        return out, state


def compose(members: Mapping[str, ETGNN], routes: Mapping[str, Union[str, Sequence[str]]]) -> ComposedModel:
    """A ``ComposedModel`` of ``members`` (name -> model) giving each property of ``routes`` (property -> member
    name, or several names: their mean) from that member. Heads a member is not routed are dropped (with the
    trunk parts only they used). Weights are copied, in the dtype of the first member used."""
    pairs = tuple((p, n) for p, ns in routes.items() for n in ([ns] if isinstance(ns, str) else ns))
    unknown = sorted({n for _, n in pairs} - set(members))
    if unknown:
        raise ValueError(f"routes name member(s) {unknown} that are not given ({sorted(members)})")
    used = {n: m for n, m in members.items() if any(r == n for _, r in pairs)}
    for n, m in used.items():
        missing = [p for p, r in pairs if r == n and p not in m.heads]
        if missing:
            raise KeyError(f"member {n!r} has no head {missing[0]!r}; heads: {list(m.heads)}")
    config = ComposedConfig(
        members=tuple((n, dataclasses.replace(m.config, heads=tuple(h for h in m.heads if (h, n) in pairs)))
                      for n, m in used.items()),
        routes=pairs)
    model = ComposedModel(config).to(dtype=next(iter(used.values())).dtype)
    for n, m in used.items():
        keep = model.members[n].state_dict().keys()
        model.members[n].load_state_dict({k: v for k, v in m.state_dict().items() if k in keep}, strict=True)
    return model.eval()


def compose_files(takes: Sequence[Tuple[str, Sequence[str]]], output: str, note: str = "",
                  average: bool = False) -> ComposedModel:
    """Compose the model files of ``takes`` (``(path, properties)`` each; members ``m1``, ``m2``, ... in that
    order) and save the result to ``output``. A property taken from several files is refused, or with
    ``average`` their mean. Its metadata names each member's file, checksum (the one the file carries, verified
    on load) and own metadata."""
    from .model_file import load_model, save_model  # here: model_file imports this module

    members, routes, sources = {}, {}, {}
    for i, (path, props) in enumerate(takes, 1):
        name = f"m{i}"
        model = load_model(path)
        if not isinstance(model, ETGNN):
            raise ValueError(f"{path}: is a composed model already; take properties from its members' files")
        for p in props:
            if p in routes and not average:
                raise ValueError(f"property {p!r} is taken twice ({sources[routes[p][0]]['file']} and {path}); "
                                 "--average takes their mean")
            routes[p] = routes.get(p, ()) + (name,)
        members[name] = model
        sources[name] = {"file": str(path), "checksum": model.checksum, "properties": list(props),
                         "metadata": model.metadata}
    model = compose(members, routes)
    model.metadata = {"composed_from": sources, "note": note}
    save_model(model, output, metadata=model.metadata)
    return model
