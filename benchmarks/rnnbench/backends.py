"""The benchmarked implementations: one ``Backend`` subclass each.

Adding a backend: subclass ``Backend`` (``_probe``, ``supports``, ``build`` returning a
``Runner(fn, collect)``, optionally ``set_threads`` and ``init_params``) and append it to
``BACKENDS``. Its column, the ratio, the check and the CSV pick it up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from . import onnx_models
from .cases import Case
from .data import perturb_norm_params
from .torch_ops import TORCH_OPS_NORMS, torch_ops_lstm

#: Class names of the plain recurrent layers, in rnncore and in ``torch.nn`` alike.
LAYER_CLASSES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}


@dataclasses.dataclass
class Runner:
    """A prepared benchmark call.

    Attributes:
        fn: The timed call (no arguments); returns whatever ``collect`` needs.
        collect: Turns ``fn``'s result into named NumPy arrays for the cross-backend check
            (``out``, ``h_n``, ``c_n``, ``grad_x``, ``grad.<param>``).
    """

    fn: Callable[[], Any]
    collect: Callable[[Any], dict[str, np.ndarray]]


class Backend:
    """Base class of a benchmarked implementation.

    Subclasses set ``name``, implement ``_probe`` (import, return the module), ``supports``
    and ``build``, and may implement ``set_threads`` and ``init_params``.
    """

    name = "?"
    #: Whether this backend counts as a peer in the ratio (rnncore is the subject).
    peer = True

    def __init__(self) -> None:
        self.mod = None
        self.note = ""
        try:
            self.mod = self._probe()
        except Exception as e:  # noqa: BLE001 -- any import failure means "skip"
            self.note = f"{self.name} unavailable: {type(e).__name__}: {e}"

    @property
    def available(self) -> bool:
        """Whether the backend imported."""
        return self.mod is not None

    def _probe(self):
        raise NotImplementedError

    def version(self) -> str:
        """Version string for the header."""
        return getattr(self.mod, "__version__", "?")

    def set_threads(self, n: int) -> str:
        """Sets the thread count for the next case; returns a note ("" when honoured)."""
        return ""

    def supports(self, case: Case) -> bool:
        """Whether this backend can run ``case``."""
        raise NotImplementedError

    def init_params(self, case: Case, seed: int) -> dict[str, np.ndarray] | None:
        """Creates the case's weights (PyTorch names), or None if this backend cannot."""
        return None

    def build(self, case: Case, params: Mapping[str, np.ndarray], data) -> Runner:
        """Prepares the timed call for ``case`` with the given weights and inputs."""
        raise NotImplementedError


def _state_dict(out_state, kind: str) -> dict[str, np.ndarray]:
    if kind == "lstm":
        h, c = out_state
        return {"h_n": np.asarray(h), "c_n": np.asarray(c)}
    return {"h_n": np.asarray(out_state)}


class RnncoreBackend(Backend):
    """rnncore, following docs/api.md."""

    name = "rnncore"
    peer = False

    def _probe(self):
        import rnncore

        return rnncore

    def set_threads(self, n: int) -> str:
        if hasattr(self.mod, "set_num_threads"):
            self.mod.set_num_threads(n)
            return ""
        return "rnncore threads n/a"

    def supports(self, case: Case) -> bool:
        return hasattr(self.mod, LAYER_CLASSES[case.spec.kind])

    def make_module(self, case: Case, **kw):
        """An rnncore layer for ``case`` (float32; ``kw`` go to the constructor, e.g. seed)."""
        cls = getattr(self.mod, LAYER_CLASSES[case.spec.kind])
        opts = dict(case.spec.kwargs)
        if case.spec.norm is not None:
            opts["norm"] = case.spec.norm
        return cls(case.input_size, case.H, dtype="float32", **opts, **kw)

    def init_params(self, case, seed):
        m = self.make_module(case, seed=seed)
        params = {k: np.array(v, dtype=np.float32) for k, v in m.state_dict().items()}
        return perturb_norm_params(params, seed) if case.spec.norm else params

    def build(self, case, params, data):
        m = self.make_module(case)
        m.load_state_dict(params)
        return self.runner(case, m, data)

    def runner(self, case: Case, m, data) -> Runner:
        """The timed call of ``case`` on the module ``m`` (eval mode for ``infer`` and
        ``stream``, training mode for ``train``)."""
        kind = case.spec.kind
        x = data["x"]
        if case.mode == "infer":
            m.eval()

            def collect(res):
                out, st = res
                return {"out": np.asarray(out), **_state_dict(st, kind)}

            return Runner(lambda: m(x), collect)
        if case.mode == "stream":
            m.eval()
            steps = [x[t : t + 1] for t in range(case.T)]

            def stream():
                st, outs = None, []
                for xt in steps:
                    out, st = m(xt, st)
                    outs.append(out)
                return outs, st

            def collect(res):
                outs, st = res
                return {"out": np.concatenate(outs, axis=0), **_state_dict(st, kind)}

            return Runner(stream, collect)
        # train
        m.train()
        gout = data["grad_out"]

        def step():
            m.zero_grad()
            out, st, tape = m.forward_train(x)
            gx, _ = m.backward(tape, gout)
            return out, st, gx

        def collect(res):
            out, st, gx = res
            d = {"out": np.asarray(out), **_state_dict(st, kind), "grad_x": np.asarray(gx)}
            d.update({f"grad.{k}": np.array(v) for k, v in m.grads.items()})
            if case.spec.norm is not None and hasattr(m, "buffers"):  # running statistics
                d.update({f"buf.{k}": np.array(v) for k, v in m.buffers().items()})
            return d

        return Runner(step, collect)


class TorchBackend(Backend):
    """PyTorch ``torch.nn.LSTM/GRU/RNN`` (eager, CPU); normalized LSTMs in PyTorch operations.

    There is no normalized recurrent layer in PyTorch, so for ``norm="layer"``/``"batch"``
    LSTM cells this backend runs ``torch_ops_lstm``: the same equations as rnncore, a Python
    loop over time with autograd, which is what a CPU user would otherwise write.
    """

    name = "torch"

    def _probe(self):
        import torch

        return torch

    def set_threads(self, n: int) -> str:
        self.mod.set_num_threads(n)
        return ""

    def supports(self, case: Case) -> bool:
        if case.spec.norm is None:
            return True
        return case.spec.kind == "lstm" and case.spec.norm in TORCH_OPS_NORMS

    def _make(self, case: Case):
        if case.spec.norm is not None:
            return torch_ops_lstm(self.mod, case.input_size, case.H, case.spec.norm)
        cls = getattr(self.mod.nn, LAYER_CLASSES[case.spec.kind])
        return cls(case.input_size, case.H, **dict(case.spec.kwargs))

    def init_params(self, case, seed):
        self.mod.manual_seed(seed)
        m = self._make(case)
        params = {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}
        return perturb_norm_params(params, seed) if case.spec.norm else params

    def build(self, case, params, data):
        torch = self.mod
        m = self._make(case)
        if case.spec.norm is not None:
            m.load_arrays(params)  # rnncore's names; buffers may change their row count
        else:
            m.load_state_dict(
                {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in params.items()}
            )
        kind = case.spec.kind

        def states(st):
            if kind == "lstm":
                return (st[0].detach().numpy(), st[1].detach().numpy())
            return st.detach().numpy()

        if case.mode == "infer":
            m.eval()
            xt = torch.from_numpy(data["x"])

            def fwd():
                with torch.inference_mode():
                    return m(xt)

            def collect(res):
                out, st = res
                return {"out": out.numpy(), **_state_dict(states(st), kind)}

            return Runner(fwd, collect)
        if case.mode == "stream":
            m.eval()
            xt = torch.from_numpy(data["x"])
            steps = [xt[t : t + 1] for t in range(case.T)]

            def stream():
                with torch.inference_mode():
                    st, outs = None, []
                    for s in steps:
                        out, st = m(s, st)
                        outs.append(out)
                    return outs, st

            def collect(res):
                outs, st = res
                out = np.concatenate([o.numpy() for o in outs], axis=0)
                return {"out": out, **_state_dict(states(st), kind)}

            return Runner(stream, collect)
        # train
        m.train()
        xt = torch.from_numpy(data["x"].copy()).requires_grad_(True)
        gout = torch.from_numpy(data["grad_out"])

        def step():
            m.zero_grad(set_to_none=True)
            xt.grad = None
            out, st = m(xt)
            out.backward(gout)
            return out, st

        def collect(res):
            out, st = res
            d = {"out": out.detach().numpy(), **_state_dict(states(st), kind)}
            d["grad_x"] = xt.grad.numpy().copy()
            d.update({f"grad.{k}": p.grad.numpy().copy() for k, p in m.named_parameters()})
            if case.spec.norm is not None:  # running statistics
                d.update({f"buf.{k}": b.numpy().copy() for k, b in m.named_buffers()})
            return d

        return Runner(step, collect)


class OrtBackend(Backend):
    """ONNX Runtime (CPU provider) running a graph of one ONNX LSTM/GRU/RNN node."""

    name = "ort"

    def _probe(self):
        import onnx  # noqa: F401 -- needed to build the graphs
        import onnxruntime

        return onnxruntime

    def supports(self, case: Case) -> bool:
        return case.spec.norm is None and case.mode in ("infer", "stream")

    def build(self, case, params, data):
        kind = case.spec.kind
        nl = dict(case.spec.kwargs).get("nonlinearity", "tanh")
        model = onnx_models.build_rnn_model(kind, params, nonlinearity=nl)
        sess = onnx_models.make_session(model, case.threads)  # intra-op threads = case.threads
        x = data["x"]
        zeros = np.zeros((1, case.B, case.H), np.float32)

        def collect_states(res):
            d = {"h_n": res[1]}
            if kind == "lstm":
                d["c_n"] = res[2]
            return d

        if case.mode == "infer":
            feeds = {"X": x, "initial_h": zeros}
            if kind == "lstm":
                feeds["initial_c"] = zeros

            def collect(res):
                return {"out": res[0][:, 0], **collect_states(res)}

            return Runner(lambda: sess.run(None, feeds), collect)

        steps = [x[t : t + 1] for t in range(case.T)]

        def stream():
            feeds = {"initial_h": zeros}
            if kind == "lstm":
                feeds["initial_c"] = zeros
            outs, res = [], None
            for s in steps:
                feeds["X"] = s
                res = sess.run(None, feeds)
                feeds["initial_h"] = res[1]
                if kind == "lstm":
                    feeds["initial_c"] = res[2]
                outs.append(res[0])
            return outs, res

        def collect(r):
            outs, res = r
            return {"out": np.concatenate([o[:, 0] for o in outs], axis=0), **collect_states(res)}

        return Runner(stream, collect)

    def version(self) -> str:
        return self.mod.__version__


#: Backend registry: the order is the column order; the first that can create weights does.
BACKENDS: list[type[Backend]] = [RnncoreBackend, TorchBackend, OrtBackend]
