"""The regularization of one call (dropout, zoneout) as multiplicative masks.

:class:`Masks` holds them; ``draw_masks`` builds them from the draws of a counter-based
generator such as the core's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ._types import Array


@dataclass
class Masks:
    """The regularization of one call, as multiplicative masks (all optional).

    Keys are ``(layer, direction)`` except for ``layer_out`` (``layer``). Shapes use
    ``T, B``, the layer's input width ``in`` and ``H_out``, ``H`` of :func:`lstm_cell`.

    Attributes:
        input: variational input dropout ``(B, in)``: the layer input ``x_t`` of that
            direction is ``x_t * m`` at every step.
        recurrent: variational recurrent dropout ``(B, H_out)``: the recurrent products
            read ``h_{t-1} * m`` (the GRU's state update reads ``h_{t-1}``).
        zone_h: zoneout ``(T, B, H_out)``, by time position: ``h_t = d h_{t-1} + (1 - d) h~_t``
            with ``h~_t`` the cell's new value (for the LSTM ``o * tanh(N_c(c~_t))``).
        zone_c: the LSTM cell's zoneout ``(T, B, H)``: ``c_t = d c_{t-1} + (1 - d) c~_t``.
        layer_out: dropout of layer ``k``'s output ``(T, B, D * H_out)`` (not the last layer).
    """

    input: dict = dataclasses.field(default_factory=dict)
    recurrent: dict = dataclasses.field(default_factory=dict)
    zone_h: dict = dataclasses.field(default_factory=dict)
    zone_c: dict = dataclasses.field(default_factory=dict)
    layer_out: dict = dataclasses.field(default_factory=dict)


# Mask sites of the core's generator (cpp/src/regularize.h).
MASK_SITES = {"input": 1, "recurrent": 2, "zone_h": 3, "zone_c": 4, "layer_out": 5}


def draw_masks(
    hits: Callable[..., Array],
    cell: str,
    *,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    bidirectional: bool,
    steps: int,
    batch: int,
    proj_size: int = 0,
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    zoneout: float = 0.0,
    training: bool = True,
) -> Masks:
    """The masks of one call, from the draws of a generator.

    Dropout (probability p) zeroes where an element's draw is a hit and scales the others by
    ``1 / (1 - p)``; zoneout keeps the previous value where it is a hit. The draws are laid
    out as in cpp/src/regularize.h: input ``(B, in)``, recurrent ``(B, H_out)``, zoneout
    ``(T, B, width)``, layer output ``(T, B, D * H_out)`` (direction 0). In eval mode only
    zoneout acts, with the expectation ``d = p``.

    Args:
        hits: ``hits(layer, direction, site, p, count) -> bool array (count,)`` (for rnncore's
            generator: ``_core.mask_hits`` with the call's seed).
        cell: ``"rnn"``, ``"lstm"`` or ``"gru"``; the other arguments describe the module.

    Returns:
        The :class:`Masks` of the call.
    """
    d = 2 if bidirectional else 1
    h_out = proj_size if (cell == "lstm" and proj_size > 0) else hidden_size
    masks = Masks()

    def dropout_mask(layer, direction, site, p, shape):
        hit = hits(layer, direction, MASK_SITES[site], p, int(np.prod(shape))).reshape(shape)
        return np.where(hit, 0.0, 1.0 / (1.0 - p))

    for k in range(num_layers):
        width_in = input_size if k == 0 else d * h_out
        for direction in range(d):
            key = (k, direction)
            if training and input_dropout > 0:
                masks.input[key] = dropout_mask(k, direction, "input", input_dropout,
                                                (batch, width_in))  # fmt: skip
            if training and recurrent_dropout > 0:
                masks.recurrent[key] = dropout_mask(k, direction, "recurrent", recurrent_dropout,
                                                    (batch, h_out))  # fmt: skip
            if zoneout > 0:
                widths = [("zone_h", h_out)] + ([("zone_c", hidden_size)] if cell == "lstm" else [])
                for site, width in widths:
                    shape = (steps, batch, width)
                    if training:
                        hit = hits(k, direction, MASK_SITES[site], zoneout, int(np.prod(shape)))
                        coef = hit.reshape(shape).astype(np.float64)
                    else:
                        coef = np.full(shape, zoneout)
                    getattr(masks, site)[key] = coef
        if training and dropout > 0 and k < num_layers - 1:
            masks.layer_out[k] = dropout_mask(k, 0, "layer_out", dropout, (steps, batch, d * h_out))
    return masks
