"""i-PI force client: path-integral and replica MD with ETGNN forces, BEC and eps_inf.

i-PI (https://ipi-code.org, ``pip install ipi``) propagates the nuclei (classical MD, PIMD, TRPMD,
PIGLET, replica exchange, ...) and asks socket clients for energies and forces, one structure
(one bead of one replica) per request.  :class:`ETGNNSocketClient` is such a client: it is ASE's
:class:`ase.calculators.socketio.SocketClient` (same socket set-up and i-PI wire protocol, from
``ase.calculators.socketio.IPIProtocol``) with an :class:`~ase_etgnn.ETGNNCalculator`, and it
returns, in i-PI's per-request JSON "extra" string, the Born effective charges and the electronic
dielectric tensor of the same structure::

    {"born_effective_charges": [[Z_a row-major, 9 numbers] for each atom a],  # (N, 9), e
     "dielectric_tensor": [[...], [...], [...]]}                               # (3, 3), eps_inf

BEC travel as (N, 9) rows (``Z[a, i, j]`` at ``9 a + 3 i + j``, the project's extended-XYZ layout)
because i-PI's selective extras writer (``extra_type='born_effective_charges'``) prints only arrays
of up to two dimensions; :func:`read_ipi_extras` reshapes them back to (N, 3, 3).

Start one client per process (``etgnn ipi-client``); several clients may serve one i-PI server, on
this or other machines.  Each client sets its own torch thread count (default 1) so that clients
placed side by side on one node do not oversubscribe the cores.

Units on the wire are atomic units (Hartree, Bohr); the conversion is ASE's (``IPIProtocol``).
"""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, TextIO, Tuple, Union

import ase.io
import numpy as np
import torch
from ase import Atoms
from ase.calculators.socketio import SocketClient, SocketClosed

from .calculator import ETGNNCalculator
from .properties import get_property_spec

__all__ = [
    "EXTRAS_PROPERTIES",
    "ETGNNSocketClient",
    "encode_extras",
    "read_ipi_extras",
    "run_client",
]

#: tensors a client can put in i-PI's extras
EXTRAS_PROPERTIES = ("born_effective_charges", "dielectric_tensor")


def encode_extras(atoms: Atoms, calc, properties: Sequence[str]) -> Dict[str, list]:
    """The extras dictionary of one structure: BEC as (N, 9) rows (e), eps_inf as (3, 3).

    An empty ``properties`` gives ``{}``.  Raises ``ValueError`` for names outside
    :data:`EXTRAS_PROPERTIES` or properties the calculator's model does not have.
    """
    out: Dict[str, list] = {}
    for name in properties:
        if name not in EXTRAS_PROPERTIES:
            raise ValueError(f"extras: unknown property {name!r}; choose from {list(EXTRAS_PROPERTIES)}")
        if name not in calc.implemented_properties:
            raise ValueError(f"extras: the model has no {name!r} head (it predicts "
                             f"{sorted(calc.implemented_properties)})")
        value = np.asarray(calc.get_property(name, atoms), dtype=np.float64)
        if get_property_spec(name).per_atom:
            value = value.reshape(len(atoms), 9)  # (N, 3, 3) -> (N, 9), row-major
        else:
            value = value.reshape(3, 3)
        out[name] = value.tolist()
    return out


class ETGNNSocketClient(SocketClient):
    """ASE's i-PI socket client that also returns BEC / eps_inf in the per-request extras.

    Args:
        atoms: the structure (species, pbc; i-PI sends positions and cell for every request).
            Its calculator must be set (an ``ETGNNCalculator``).
        host, port, unixsocket, timeout, log: as :class:`ase.calculators.socketio.SocketClient`
            (a unix socket ``NAME`` is the file ``/tmp/ipi_NAME``, i-PI's default prefix).
        extras: tensors to return (subset of :data:`EXTRAS_PROPERTIES`).
        extras_every: attach the tensors to every ``extras_every``-th request of each bead (counted
            by this client; the bead index comes from i-PI's INIT message).  On the other requests
            the same keys are sent with empty lists, because i-PI requires every bead of a step to
            return the same keys.  1 (default): every request.
        stress: return the virial ``-V sigma`` (needs a calculator with stress, e.g.
            ``forces="conservative"``); otherwise the virial sent is zero, which is fine for NVE/NVT
            but not for constant-pressure runs.

    The energy sent is the model's energy head (0 for a model without one; forces are unaffected).
    """

    def __init__(self, atoms: Atoms, *, host: str = "localhost", port: Optional[int] = None,
                 unixsocket: Optional[str] = None, timeout: Optional[float] = None,
                 log: Optional[TextIO] = None, extras: Sequence[str] = (), extras_every: int = 1,
                 stress: bool = False) -> None:
        if atoms.calc is None:
            raise ValueError("atoms has no calculator")
        extras = tuple(extras)
        for name in extras:
            if name not in EXTRAS_PROPERTIES:
                raise ValueError(f"extras: unknown property {name!r}; choose from {list(EXTRAS_PROPERTIES)}")
            if name not in atoms.calc.implemented_properties:
                raise ValueError(f"extras: the model has no {name!r} head (it predicts "
                                 f"{sorted(atoms.calc.implemented_properties)})")
        if int(extras_every) < 1:
            raise ValueError(f"extras_every must be >= 1, got {extras_every}")
        if stress and "stress" not in atoms.calc.implemented_properties:
            raise ValueError("stress=True needs a calculator with stress (ETGNNCalculator(..., "
                             "forces='conservative') and a model with an energy head)")
        if stress and not all(atoms.pbc):
            raise ValueError("stress=True needs a periodic structure (pbc all True)")
        self.atoms = atoms
        self.extras = extras
        self.extras_every = int(extras_every)
        self.use_stress = bool(stress)
        #: requests served per bead index (the bead index i-PI sent in its INIT message)
        self.requests_per_bead: Dict[int, int] = {}
        #: requests whose extras carried the tensors
        self.n_with_tensors = 0
        self._bead = 0
        #: why serving stopped: "EXIT" (i-PI's message) or "connection closed by i-PI"
        self.end_reason: Optional[str] = None
        super().__init__(host=host, port=port, unixsocket=unixsocket, timeout=timeout, log=log)

    # -- one force evaluation -------------------------------------------------------------------
    def _evaluate(self) -> Tuple[float, np.ndarray, np.ndarray, bytes]:
        """Energy (eV), forces (N,3) eV/A, virial (3,3) eV and the extras string of ``self.atoms``."""
        atoms = self.atoms
        calc = atoms.calc
        forces = atoms.get_forces()  # (N, 3) eV/A
        energy = float(calc.get_property("energy", atoms)) if "energy" in calc.implemented_properties else 0.0
        if self.use_stress:
            virial = -atoms.get_volume() * atoms.get_stress(voigt=False)  # (3, 3) eV
        else:
            virial = np.zeros((3, 3))
        k = self.requests_per_bead.get(self._bead, 0)
        self.requests_per_bead[self._bead] = k + 1
        if not self.extras:
            return energy, forces, virial, b""
        if k % self.extras_every == 0:
            extras = encode_extras(atoms, calc, self.extras)
            self.n_with_tensors += 1
        else:
            extras = {name: [] for name in self.extras}
        return energy, forces, virial, json.dumps(extras, separators=(",", ":")).encode("ascii")

    # -- protocol loop --------------------------------------------------------------------------
    def irun_rank0(self, atoms: Optional[Atoms] = None, use_stress: Optional[bool] = None):
        """Serve i-PI's requests until it sends EXIT or closes the socket; yields after each force.

        Same message handling as ASE's loop, plus: the client reports NEEDINIT after every force so
        that i-PI sends the bead index of the next request (for ``extras_every``), and GETFORCE
        replies carry the extras string.  ``atoms``/``use_stress`` are those of the constructor.
        """
        proto = self.protocol
        state = "NEEDINIT"
        result = None
        try:
            while True:
                try:
                    msg = proto.recvmsg()
                except (SocketClosed, ConnectionResetError) as exc:
                    # between requests: i-PI closes its sockets when it ends, not always after EXIT
                    if state == "HAVEDATA":
                        raise ConnectionError("i-PI closed the connection before collecting the forces") from exc
                    self.end_reason = "connection closed by i-PI"
                    return
                if msg == "EXIT":
                    self.end_reason = "EXIT"
                    return
                if msg == "STATUS":
                    proto.sendmsg(state)
                elif msg == "INIT":
                    bead, _ = proto.recvinit()
                    self._bead = int(np.asarray(bead).ravel()[0])
                    state = "READY"
                elif msg == "POSDATA":
                    if state != "READY":
                        raise RuntimeError(f"i-PI sent POSDATA while the client was {state}")
                    cell, _icell, positions = proto.recvposdata()
                    if len(positions) != len(self.atoms):
                        raise ValueError(f"i-PI sent {len(positions)} atoms; the client's structure has "
                                         f"{len(self.atoms)} (use the same structure file for both)")
                    self.atoms.cell[:] = cell
                    self.atoms.positions[:] = positions
                    result = self._evaluate()
                    state = "HAVEDATA"
                    yield
                elif msg == "GETFORCE":
                    if state != "HAVEDATA" or result is None:
                        raise RuntimeError(f"i-PI asked for forces while the client was {state}")
                    energy, forces, virial, extra = result
                    # i-PI reads at least one byte without trouble; ASE sends one zero byte by default
                    more = np.frombuffer(extra, dtype=np.byte) if extra else np.zeros(1, dtype=np.byte)
                    proto.sendforce(energy, forces, virial, morebytes=more)
                    result = None
                    state = "NEEDINIT"
                else:
                    raise RuntimeError(f"unexpected i-PI message {msg!r}")
        finally:
            self.close()

    def irun(self, atoms: Optional[Atoms] = None, use_stress: Optional[bool] = None):
        if atoms is not None and atoms is not self.atoms:
            raise ValueError("this client serves the Atoms object it was constructed with; pass none here")
        if use_stress is not None and bool(use_stress) != self.use_stress:
            raise ValueError("set stress=... in the constructor (it checks that the calculator has stress)")
        return self.irun_rank0()

    def run(self, atoms: Optional[Atoms] = None, use_stress: Optional[bool] = None,
            announce: Optional[TextIO] = None) -> int:
        """Serve until i-PI ends the run; returns the number of force evaluations. ``announce``: a stream told
        when the first force evaluation is sent (i-PI hands this client work: a restarted or added client)."""
        n = 0
        for _ in self.irun(atoms, use_stress):
            n += 1
            if n == 1 and announce is not None:
                print("etgnn ipi-client: first force evaluation sent", file=announce, flush=True)
        return n


def run_client(model: Union[str, Path], structure: Union[str, Path], *, unixsocket: Optional[str] = None,
               host: str = "localhost", port: Optional[int] = None, threads: int = 1,
               extras: Sequence[str] = (), extras_every: int = 1, device: str = "cpu",
               dtype: str = "float32", forces: str = "direct", stress: bool = False,
               symmetrize: bool = False, connect_timeout: float = 60.0,
               log: Optional[TextIO] = None) -> int:
    """Load the model, connect to i-PI (retrying for ``connect_timeout`` s while the server starts) and
    serve force requests until i-PI ends the run.  Returns the number of evaluations.

    ``structure`` gives the species (and pbc) in the order i-PI uses: the file i-PI was initialised
    from.  ``threads`` sets ``torch.set_num_threads`` for this process (one client per core).
    ``symmetrize`` defaults to False: MD snapshots have no symmetry, so the spglib search only costs.
    """
    if (unixsocket is None) == (port is None):
        raise ValueError("give exactly one of a unix socket name or an inet port")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    path = Path(structure)
    if not path.is_file():
        raise FileNotFoundError(f"structure file {str(path)!r} not found")
    torch.set_num_threads(int(threads))
    atoms = ase.io.read(path, index=0)
    atoms.calc = ETGNNCalculator(model, device=device, dtype=dtype, forces=forces, symmetrize=symmetrize)
    where = f"unix socket /tmp/ipi_{unixsocket}" if unixsocket is not None else f"{host}:{port}"
    deadline = time.monotonic() + float(connect_timeout)
    while True:
        try:
            client = ETGNNSocketClient(atoms, host=host, port=port, unixsocket=unixsocket, extras=extras,
                                       extras_every=extras_every, stress=stress)
            break
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            if time.monotonic() > deadline:
                raise ConnectionError(f"no i-PI server at {where} after {connect_timeout:g} s ({exc})") from exc
            time.sleep(0.2)
    out = log if log is not None else sys.stdout
    print(f"etgnn ipi-client: connected to {where} ({len(atoms)} atoms, {threads} torch thread(s), "
          f"extras {list(extras) or 'none'})", file=out, flush=True)
    if "energy" not in atoms.calc.implemented_properties:
        print("etgnn ipi-client: the model has no energy head: the energy sent to i-PI is 0 (forces are exact; "
              "i-PI's potential and conserved quantity are not meaningful)", file=out, flush=True)
    n = client.run(announce=out)
    print(f"etgnn ipi-client: i-PI ended the run after {n} force evaluations ({client.end_reason})",
          file=out, flush=True)
    return n


# ---------------------------------------------------------------------------------------------------
# reading i-PI output
_HEADER = re.compile(r"^\s*#EXTRAS\((?P<type>[^)]*)\)#\s*Step:\s*(?P<step>\d+)")
_SHAPES = {"born_effective_charges": (-1, 3, 3), "dielectric_tensor": (3, 3)}


def read_ipi_extras(path: Union[str, Path]) -> Tuple[str, np.ndarray, List[Optional[np.ndarray]]]:
    """Read one bead's extras file written by i-PI with a selected field, e.g.
    ``<trajectory filename='bec' stride='1' extra_type='born_effective_charges'> extras </trajectory>``.

    Returns ``(name, steps, frames)``: the field name from the headers, the (T,) step numbers i-PI
    printed and T arrays (BEC reshaped to (N, 3, 3) e, eps_inf to (3, 3)); a frame is ``None`` where
    the client sent no tensors (``extras_every`` > 1).  Raises ``ValueError`` naming the file and
    frame of a malformed entry; files written with ``extra_type='raw'`` are refused (Python repr of
    all beads, not meant for parsing).
    """
    path = Path(path)
    name: Optional[str] = None
    steps: List[int] = []
    frames: List[Optional[np.ndarray]] = []
    rows: Optional[List[List[float]]] = None

    def close_frame() -> None:
        if rows is None:
            return
        if not rows:
            frames.append(None)
            return
        widths = {len(r) for r in rows}
        if len(widths) != 1:
            raise ValueError(f"{path}: frame {len(frames)} (step {steps[-1]}): rows of unequal length {sorted(widths)}")
        a = np.asarray(rows, dtype=np.float64)
        shape = _SHAPES.get(name)
        if shape is not None:
            want = int(np.prod([d for d in shape if d > 0]))
            if a.size % want:
                raise ValueError(f"{path}: frame {len(frames)} (step {steps[-1]}): {a.size} numbers do not "
                                 f"fit the shape {shape} of {name}")
            a = a.reshape(shape)
        frames.append(a)

    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            m = _HEADER.match(line)
            if m is not None:
                close_frame()
                kind = m.group("type")
                if kind == "raw":
                    raise ValueError(f"{path}: extras written with extra_type='raw'; write each tensor with its "
                                     "own <trajectory ... extra_type='born_effective_charges'> (or "
                                     "'dielectric_tensor') to read them here")
                if name is None:
                    name = kind
                elif kind != name:
                    raise ValueError(f"{path}:{lineno}: field {kind!r} after {name!r}: one field per file")
                steps.append(int(m.group("step")))
                rows = []
                continue
            if not line.strip():
                continue
            if rows is None:
                raise ValueError(f"{path}:{lineno}: data before the first '#EXTRAS(...)#' header")
            try:
                rows.append([float(x) for x in line.split()])
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: not a row of numbers ({exc})") from exc
    close_frame()
    if name is None:
        raise ValueError(f"{path}: no i-PI extras frames")
    return name, np.asarray(steps, dtype=np.int64), frames
