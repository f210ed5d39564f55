"""Saving and loading a ``FocalHead`` whatever its label shards (issue 27): re-split on load.

An unsharded head saves as any Keras layer (``store["0"]``, ``store["1"]``, ... in the order its
weights were created), so files written before sharding existed still load. A sharded head saves
each shard's weights under ``"<name>.<shard>"`` (``"kernel.0"``, ``"bias.1"``,
``"kernel_m.3"``, ``"head_iterations.0"``, ``"alpha.2"``) plus ``"label_bounds"``, the first
label of every shard and ``C``. Each variable is written on its own, so saving holds one shard
at a time in the saving process (not the whole kernel).

Loading reads a file of either kind into a head of any ``label_shards`` (None included): each
target variable takes the rows ``[start, start + size)`` it owns, gathered from the saved pieces
that overlap them, one piece at a time. A file whose label count is not the head's ``num_labels``
is refused with a ValueError naming ``num_labels``.
"""

from __future__ import annotations

import numpy as np

BOUNDS = "label_bounds"


def base_name(variable):
    """``kernel_shard3`` (or ``focal_head/kernel_shard3:0``) -> ``("kernel", 3)``; unsharded: index None."""
    name = variable.name.split("/")[-1].split(":")[0]
    if "_shard" in name:
        base, index = name.rsplit("_shard", 1)
        return base, int(index)
    return name, None


def _own_variables(layer):
    if hasattr(layer, "_trainable_variables"):  # Keras 3
        return list(layer._trainable_variables) + list(layer._non_trainable_variables)
    return list(layer._trainable_weights) + list(layer._non_trainable_weights)


def unsharded_order(layer):
    """The names of an unsharded head's weights in the order Keras numbers them in a file."""
    names = ["kernel"] + (["bias"] if layer.use_bias else [])
    if layer.head_optimizer is not None:
        for slot in layer.head_optimizer.update.slot_names:
            names += [f"kernel_{slot}"] + ([f"bias_{slot}"] if layer.use_bias else [])
        names.append("head_iterations")
    names += [n for n, value in layer._vectors.items() if isinstance(value, (np.ndarray, str))]
    return names


def save(layer, store):
    """Writes a sharded head's weights shard by shard, with the shards' label bounds."""
    for var in _own_variables(layer):
        base, index = base_name(var)
        store[f"{base}.{index}"] = var
    store[BOUNDS] = np.array([sh.start for sh in layer.shards] + [layer.num_labels], np.int64)


class _Saved:
    """The pieces of a saved head: ``bounds`` (first label of each piece, then ``C``) and a way to
    read the piece ``i`` of a weight."""

    def __init__(self, layer, store):
        keys = set(store.keys())
        self.store = store
        if BOUNDS in keys:
            self.bounds = [int(b) for b in np.asarray(store[BOUNDS])]
            self.key = lambda base, i: f"{base}.{i}"
            self.has = lambda base: f"{base}.0" in keys
        else:  # an unsharded head's numbered weights
            order = {name: str(i) for i, name in enumerate(unsharded_order(layer))}
            kernel = np.asarray(store[order["kernel"]]) if order["kernel"] in keys else None
            self.bounds = [0, int(kernel.shape[0]) if kernel is not None else -1]
            self.key = lambda base, i: order[base]
            self.has = lambda base: base in order and order[base] in keys

    @property
    def num_labels(self):
        return self.bounds[-1]

    def rows(self, base, start, stop):
        """Rows ``[start, stop)`` of weight ``base`` from the pieces that overlap them."""
        parts = []
        for i in range(len(self.bounds) - 1):
            lo, hi = self.bounds[i], self.bounds[i + 1]
            if hi <= start or lo >= stop:
                continue
            piece = np.asarray(self.store[self.key(base, i)])
            parts.append(piece[max(start, lo) - lo:min(stop, hi) - lo])
            del piece
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)

    def scalar(self, base):
        return np.asarray(self.store[self.key(base, 0)])


def load(layer, store, default):
    """Reads a file written by a head of any ``label_shards`` into ``layer`` (re-split);
    ``default(store)`` (Keras' own loading) for an unsharded file into an unsharded head."""
    if not len(store.keys()):
        # Keras 3 tries a layer whose load failed once more under another path, with an empty
        # store, and reports that error: report the first one again.
        raise getattr(layer, "_load_error", None) or ValueError(
            f"Invalid value for argument `num_labels`. Expected weights for this head in the file being "
            f"loaded. Received: num_labels={layer.num_labels} and no weights")
    saved = _Saved(layer, store)
    if saved.num_labels != layer.num_labels:
        error = ValueError(f"Invalid value for argument `num_labels`. Expected the label count of the weights "
                           f"being loaded ({saved.num_labels}). Received: num_labels={layer.num_labels}")
        object.__setattr__(layer, "_load_error", error)
        raise error
    if layer.label_shards is None and BOUNDS not in set(store.keys()):
        return default(store)
    ranges = {sh.index: (sh.start, sh.start + sh.size) for sh in layer.shards}
    for var in _own_variables(layer):
        base, index = base_name(var)
        if not saved.has(base):
            arg = base if base in layer._vectors else "head_optimizer"
            raise ValueError(f"Invalid value for argument `{arg}`. Expected the head that wrote the weights being "
                             f"loaded, which hold no `{base}` (a head with other options or head optimizer). "
                             f"Received: {arg}={getattr(layer, arg, None)!r}")
        if len(tuple(var.shape)) == 0:
            var.assign(saved.scalar(base))
            continue
        start, stop = ranges.get(index, (0, layer.num_labels))
        var.assign(saved.rows(base, start, stop))
