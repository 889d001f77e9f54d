"""Predictions and accuracy of many parameter vectors for one model, computed together (every stage uses it).

Generated parameters usually sit in the last layers, so everything the model computes before the
first of them is the same for every vector. `split_model` cuts the model's torch.fx graph there:
the prefix runs once per test batch and the suffix once per vector (`torch.func.functional_call`),
for a chunk of vectors at once (`vmap`) where the memory budget allows more than one (GPUs).
200 models cost one prefix plus 200 suffixes.
Where the model cannot be traced, the prefix is empty and the whole model runs for each vector; where
vmap fails, the vectors of a chunk run one by one. Each fallback is logged once per model class.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
from torch import fx, nn
from torch.func import functional_call, vmap

from . import distributed
from .errors import DatasetError
from .params import ParamSpec

log = logging.getLogger(__name__)
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
_logged: set[tuple[str, str]] = set()
# Bytes of suffix input a vmapped chunk may hold. On CPU one vector at a time is fastest: the batched
# suffix is memory-bound and vmap's BatchNorm with batched weights takes three passes (BENCHMARKS.md).
MEMORY_BUDGET = {"cpu": 0, "cuda": 2 * 2**30}
IN_PLACE_OPERATORS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.iand, operator.ior}


@torch.no_grad()
def predict(model: nn.Module, loader: Batches, device: torch.device | str = "cpu") -> torch.Tensor:
    """Predicted classes [n] of one model in eval mode."""
    model.eval().to(device)
    return torch.cat([model(x.to(device)).argmax(-1).cpu() for x, _ in loader])


class ModelSplit(NamedTuple):
    """suffix(*prefix(x)) == model(x); `overwrites_input`: the suffix may write into prefix(x) in place."""

    prefix: nn.Module
    suffix: nn.Module
    overwrites_input: bool


def split_model(model: nn.Module, spec: ParamSpec) -> ModelSplit:
    """Cut `model` at the first operation that reads one of `spec`'s parameters; only the suffix reads them.

    prefix(x) returns a tuple: every activation computed before the cut and still needed after it (the
    last activation plus residual inputs). The suffix keeps the model's parameter names, so
    `functional_call(suffix, subset, prefix(x))` works. Untraceable model: prefix = identity, suffix = model.
    """
    try:
        graph = fx.Tracer().trace(model.eval())
    except Exception as e:  # symbolic tracing fails in many ways (control flow on tensors, unsupported ops)
        _log_once(model, "untraceable", "%s cannot be traced by torch.fx (%s): every model runs in full",
                  type(model).__name__, str(e).splitlines()[0] if str(e) else type(e).__name__)
        return ModelSplit(_Identity(), model, overwrites_input=True)
    generated = set(spec.names)

    def reads_generated(node: fx.Node) -> bool:
        if node.op not in ("call_module", "get_attr"):
            return False
        return any(name == node.target or name.startswith(node.target + ".") for name in generated)

    nodes = list(graph.nodes)
    first = next((i for i, node in enumerate(nodes) if reads_generated(node)), len(nodes) - 1)
    before, after = nodes[:first], nodes[first:]
    after_set = set(after)
    frontier = [node for node in before if any(user in after_set for user in node.users)]

    prefix_graph, env = fx.Graph(), {}
    for node in before:
        env[node] = prefix_graph.node_copy(node, env.__getitem__)
    prefix_graph.output(tuple(env[node] for node in frontier))
    suffix_graph = fx.Graph()
    env = {node: suffix_graph.placeholder(node.name) for node in frontier}
    varying: set[fx.Node] = set()  # nodes whose value depends on the generated parameters
    overwrites = False
    modules = dict(model.named_modules())
    for node in after:
        env[node] = suffix_graph.node_copy(node, env.__getitem__)
        if reads_generated(node) or any(arg in varying for arg in node.all_input_nodes):
            varying.add(node)
        elif _in_place(node, modules):  # writes into a value computed from the prefix's output alone
            overwrites = True
    return ModelSplit(fx.GraphModule(model, prefix_graph), fx.GraphModule(model, suffix_graph), overwrites)


def _in_place(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether `node` may write into its input: ReLU(inplace=True), F.relu(x, inplace=True), x += y, x.add_(y)."""
    if node.op == "call_module":
        return bool(getattr(modules[node.target], "inplace", False))
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    if node.op == "call_function" and node.target in IN_PLACE_OPERATORS:
        return True
    return bool(node.kwargs.get("inplace")) or (name.endswith("_") and not name.endswith("__"))


def predict_many(model: nn.Module, spec: ParamSpec, vectors: torch.Tensor, loader: Batches,
                 chunk: int = 50, device: torch.device | str = "cpu", memory_budget: int | None = None,
                 desc: str | None = None) -> torch.Tensor:
    """Predicted classes [M, n] of the model with each of `vectors` [M, D] loaded into `spec`'s subset.

    Under a multi-process launch the vectors are split across the processes in whole chunks, each evaluates
    its share exactly as a single process would (`predict_many_local`), and every process gets all the rows:
    bit-identical to a single-process run. `memory_budget`, `desc`: see `predict_many_local`.
    """
    acc = distributed.accelerator()
    if acc.num_processes == 1:
        return predict_many_local(model, spec, vectors, loader, chunk, device, memory_budget, desc)
    bounds = distributed.chunk_bounds(len(vectors), chunk, acc.num_processes)
    lo, hi = bounds[acc.process_index]
    n = sum(len(y) for _, y in loader)
    desc = desc if acc.is_main_process else None
    local = predict_many_local(model, spec, vectors[lo:hi], loader, chunk, device, memory_budget, desc
                               ).reshape(hi - lo, n)
    width = max(b - a for a, b in bounds)  # all_gather needs equal shapes: pad every share to the widest
    padded = torch.zeros(width, n, dtype=torch.int64, device=acc.device)
    padded[: hi - lo] = local
    everyone = acc.gather(padded).cpu()  # [num_processes * width, n]
    return torch.cat([everyone[r * width: r * width + b - a] for r, (a, b) in enumerate(bounds)])


@torch.no_grad()
def predict_many_local(model: nn.Module, spec: ParamSpec, vectors: torch.Tensor, loader: Batches,
                       chunk: int = 50, device: torch.device | str = "cpu", memory_budget: int | None = None,
                       desc: str | None = None) -> torch.Tensor:
    """Predicted classes [M, n] of the model with each of `vectors` [M, D] loaded into `spec`'s subset, in this
    process alone.

    At most `chunk` vectors run together, fewer where their copies of the suffix's input [chunk, batch, ...]
    would exceed `memory_budget` bytes (default: MEMORY_BUDGET of the device type). `desc`: the label of a
    progress bar over the batches (None: no bar).
    """
    spec.check(model)
    if len(vectors) == 0:
        return torch.empty(0, 0, dtype=torch.int64)
    model.eval().to(device)
    prefix, suffix, overwrites_input = split_model(model, spec)
    suffix_logits = _batched(model, suffix)
    if memory_budget is None:
        memory_budget = MEMORY_BUDGET.get(torch.device(device).type, MEMORY_BUDGET["cuda"])
    subsets, rows = [], []
    for x, _ in distributed.progress_bar(loader, desc is not None, desc=desc, leave=False):
        frontier = prefix(x.to(device))  # computed once for every vector
        if not subsets:  # chunk: as many vectors as the budget holds copies of the suffix's input
            size = sum(t.nbytes for t in frontier if isinstance(t, torch.Tensor))
            m = max(1, min(chunk, memory_budget // max(1, size)))
            subsets = [spec.unflatten(vectors[start:start + m].to(device))  # name -> [m, *shape]
                       for start in range(0, len(vectors), m)]
            rows = [[] for _ in subsets]
        for row, subset in zip(rows, subsets, strict=True):
            # a suffix that writes into its input gets a copy: the next chunk needs the input intact
            inputs = tuple(_copy(t) for t in frontier) if overwrites_input else frontier
            row.append(suffix_logits(subset, inputs).argmax(-1).cpu())  # [m, batch]
    if not rows:
        raise DatasetError("the loader yielded no batches, so there is nothing to predict: pass a loader over "
                           "at least one example")
    return torch.cat([torch.cat(row, dim=1) for row in rows])


def _batched(model: nn.Module, suffix: nn.Module) -> Callable[[dict, tuple], torch.Tensor]:
    """subset (name -> [m, *shape]), frontier -> logits [m, batch, classes]: vmap, or one by one if vmap fails."""

    def logits(subset: dict[str, torch.Tensor], frontier: tuple) -> torch.Tensor:
        return functional_call(suffix, subset, frontier)

    vectorised = vmap(logits, in_dims=(0, None))
    use_vmap = True

    def run(subset: dict[str, torch.Tensor], frontier: tuple) -> torch.Tensor:
        nonlocal use_vmap
        if use_vmap and len(next(iter(subset.values()))) > 1:
            try:
                return vectorised(subset, frontier)
            except torch.OutOfMemoryError:
                raise
            except RuntimeError as e:  # an operation without a vmap rule, or data-dependent control flow
                _log_once(model, "no-vmap", "%s cannot be vmapped (%s): models are evaluated one by one",
                          type(model).__name__, str(e).splitlines()[0])
                use_vmap = False
        m = len(next(iter(subset.values())))
        return torch.stack([logits({name: t[i] for name, t in subset.items()}, frontier) for i in range(m)])

    return run


def _copy(value):
    return value.clone() if isinstance(value, torch.Tensor) else value


class _Identity(nn.Module):
    def forward(self, *inputs):
        return inputs


def _log_once(model: nn.Module, reason: str, message: str, *args) -> None:
    key = (type(model).__name__, reason)
    if key not in _logged:
        _logged.add(key)
        log.warning(message, *args)


def labels_of(loader: Batches) -> torch.Tensor:
    return torch.cat([y for _, y in loader])


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction correct per row: predictions [M, n] (or [n]), labels [n] -> [M] (or [])."""
    return (predictions == labels).float().mean(-1)


def accuracy_many(model: nn.Module, spec: ParamSpec, vectors: torch.Tensor, loader: Batches, chunk: int = 50,
                  device: torch.device | str = "cpu", desc: str | None = None) -> torch.Tensor:
    """Accuracy [M] of the model with each of `vectors` [M, D] loaded, on the examples of `loader`."""
    return accuracy(predict_many(model, spec, vectors, loader, chunk, device, desc=desc), labels_of(loader))
